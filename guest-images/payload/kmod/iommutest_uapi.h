/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * iommutest: the interface between the module (sva.c) and the static test programs
 * (progs/sva_user.c, progs/perfcount.c), and the PASID test device's descriptor and
 * completion record layouts (vmm/docs/pasid-device.md), which user programs write themselves
 * when the device works on their address space.
 */
#ifndef IOMMUTEST_UAPI_H
#define IOMMUTEST_UAPI_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* Descriptor (64 bytes). */
#define IOMMUTEST_OP_NOP 0
#define IOMMUTEST_OP_COPY 1
#define IOMMUTEST_OP_FILL 2
#define IOMMUTEST_OP_COMPARE 3
struct iommutest_desc {
	__u8 op, flags;
	__u16 rsvd;
	__u32 len;
	__u64 src, dst, pattern, cpl;
	__u64 rsvd2[3];
} __attribute__((packed));

/* Completion record (32 bytes, 32-byte aligned). */
#define IOMMUTEST_ST_SUCCESS 1
#define IOMMUTEST_ST_MISMATCH 2
#define IOMMUTEST_ST_TRANSLATION_FAULT 0x10
#define IOMMUTEST_ST_PAGE_REQUEST_FAILED 0x11
struct iommutest_cpl {
	__u8 status, rsvd[3];
	__u32 bytes;
	__u64 fault, result, rsvd2;
} __attribute__((packed));

/*
 * IOMMUTEST_SVA_RUN on /sys/kernel/debug/iommutest/sva: binds the calling process's address
 * space to the PASID test device through the IOMMU driver's SVA operation, points one work
 * queue (PASID-tagged, USE_PRI) at the caller's descriptor ring and runs `count` descriptors
 * (ring addresses, buffers and completion records are the caller's virtual addresses), waits
 * up to 10 s, unbinds, and runs the queue once more on the same PASID without USE_PRI (its
 * PASID entry is gone, so the ring read must fault). Returns 0 when the queue was run (look at the result fields), or -errno
 * when it could not be set up (the kernel log says why).
 */
struct iommutest_sva_run {
	__u64 ring;		/* in: VA of the ring, 64-byte aligned */
	__u32 ring_size;	/* in: ring slots, a power of two, 2..4096 */
	__u32 count;		/* in: descriptors to run, < ring_size */
	__u32 pasid;		/* out: the PASID the process was bound to */
	__u32 head;		/* out: WQ_HEAD when the queue stopped or finished */
	__u32 status;		/* out: WQ_STATUS */
	__u32 error;		/* out: WQ_ERROR */
	__u64 fault_addr;	/* out: WQ_FAULT_ADDR */
	__u32 page_requests;	/* out: PAGE_REQUESTS register, delta over the run */
	__u32 page_responses;	/* out: PAGE_RESPONSES register, delta over the run */
	__u32 completed;	/* out: WQ_COMPLETED */
	__u32 timed_out;	/* out: 1 when the 10 s wait ran out */
	__u64 usecs;		/* out: wall time of the run */
	__u32 unbind_status;	/* out: WQ_STATUS of a run on the PASID after unbind */
	__u32 unbind_error;	/* out: its WQ_ERROR (the ring read must fault) */
};

#define IOMMUTEST_SVA_RUN _IOWR('i', 0x51, struct iommutest_sva_run)

#endif
