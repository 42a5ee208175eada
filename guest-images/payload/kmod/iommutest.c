// SPDX-License-Identifier: GPL-2.0-only
/*
 * iommutest: the guest side of the iommu-emulator test payload.
 *
 * One source for Debian's 5.10, 6.1 and 6.12 kernels (version switches below). It reports
 * what the kernel sees of the IOMMU in /sys/kernel/debug/iommutest/report, one line per
 * test in the payload's format ("IOMMUTEST <name> PASS|FAIL|SKIP <detail>"), and writes
 * the VMM's test-exit port from kernel mode (user-space port I/O faults in a nested guest):
 *
 *   echo N > /sys/module/iommutest/parameters/exit_code   -> outb(N, 0xf4)
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pci.h>
#include <linux/iommu.h>
#include <linux/dma-mapping.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/version.h>
#include <linux/io.h>
#include <linux/gfp.h>
#include <linux/delay.h>
#include <linux/pci-ats.h>
#include <linux/err.h>
#include <linux/jiffies.h>
#include <linux/kmsg_dump.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/interrupt.h>
#include <linux/atomic.h>

#include "iommutest.h"
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0) || LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/mdev.h>
#endif

#define IOMMUTEST_EXIT_PORT 0xf4

/* VT-d register offsets and fields (Intel VT-d Architecture Specification, chapter 11). */
#define DMAR_ECAP_REG 0x10		/* 11.4.3 Extended Capability Register */
#define DMAR_GSTS_REG 0x1c		/* 11.4.5 Global Status Register */
#define DMAR_RTADDR_REG 0x20		/* 11.4.6 Root Table Address Register */
#define ECAP_SMTS (1ULL << 43)		/* Scalable Mode Translation Support */
#define ECAP_QI (1ULL << 1)		/* Queued Invalidation support */
#define GSTS_TES (1U << 31)		/* Translation Enable Status */
#define GSTS_QIES (1U << 26)		/* Queued Invalidation Enable Status */
#define GSTS_IRES (1U << 25)		/* Interrupt Remapping Enable Status */
#define RTADDR_TTM_SHIFT 10		/* Translation Table Mode, bits 11:10 */
#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_BLK_MODERN 0x1042
#define VIRTIO_BLK_LEGACY 0x1001

static struct dentry *iommutest_dir;

static unsigned long dmar_base;
module_param(dmar_base, ulong, 0444);
MODULE_PARM_DESC(dmar_base, "physical address of the first DMAR unit's registers (0: none)");

static int sm = -1;
module_param(sm, int, 0444);
MODULE_PARM_DESC(sm, "scalable mode asked on the command line: 1 sm_on, 0 sm_off, -1 kernel default");

static int dmar_table = -1;
module_param(dmar_table, int, 0444);
MODULE_PARM_DESC(dmar_table, "the firmware has an ACPI DMAR table: 1 yes, 0 no (no IOMMU configured), -1 unknown");

/*
 * Why a test that needs the IOMMU to translate `dev` cannot run here, or NULL. Only a
 * machine without any IOMMU (no ACPI DMAR table: `iommu-vmm --iommu none`) is a SKIP; a
 * DMAR table with the device not behind a unit is the kernel's failure, reported by the test.
 */
static const char *no_iommu_reason(struct device *dev)
{
	if (device_iommu_mapped(dev) || dmar_table != 0)
		return NULL;
	return "no IOMMU (no ACPI DMAR table): --iommu intel-iommu";
}

static int exit_code_set(const char *val, const struct kernel_param *kp)
{
	u8 code;
	int ret = kstrtou8(val, 0, &code);

	if (ret)
		return ret;
	outb(code, IOMMUTEST_EXIT_PORT);
	return 0;
}

static const struct kernel_param_ops exit_code_ops = {
	.set = exit_code_set,
};
module_param_cb(exit_code, &exit_code_ops, NULL, 0200);
MODULE_PARM_DESC(exit_code, "writing N sends N to the VMM test-exit port 0xf4");

static const char *domain_type_name(unsigned int type)
{
	switch (type) {
	case IOMMU_DOMAIN_BLOCKED:
		return "blocked";
	case IOMMU_DOMAIN_IDENTITY:
		return "identity";
	case IOMMU_DOMAIN_UNMANAGED:
		return "unmanaged";
	case IOMMU_DOMAIN_DMA:
		return "dma";
#ifdef IOMMU_DOMAIN_DMA_FQ
	case IOMMU_DOMAIN_DMA_FQ:
		return "dma-fq";
#endif
	default:
		return "other";
	}
}

static struct pci_dev *find_virtio_blk(void)
{
	struct pci_dev *pdev = pci_get_device(VIRTIO_VENDOR, VIRTIO_BLK_MODERN, NULL);

	if (!pdev)
		pdev = pci_get_device(VIRTIO_VENDOR, VIRTIO_BLK_LEGACY, NULL);
	return pdev;
}

static void test_device(struct seq_file *m, struct pci_dev *pdev)
{
	struct device *dev = &pdev->dev;
	struct iommu_domain *dom;
	struct iommu_group *grp;
	struct page *page;
	dma_addr_t iova;
	const char *no_iommu = no_iommu_reason(dev);

	if (no_iommu) {
		seq_printf(m, "IOMMUTEST kmod_dev_iommu_mapped SKIP %s\n", no_iommu);
		seq_printf(m, "IOMMUTEST kmod_iommu_group SKIP %s\n", no_iommu);
		seq_printf(m, "IOMMUTEST kmod_default_domain SKIP %s\n", no_iommu);
		dom = NULL;
		goto dma_map;
	}
	if (device_iommu_mapped(dev))
		seq_printf(m, "IOMMUTEST kmod_dev_iommu_mapped PASS %s\n", pci_name(pdev));
	else
		seq_printf(m, "IOMMUTEST kmod_dev_iommu_mapped FAIL %s is not behind an IOMMU\n",
			   pci_name(pdev));

	grp = iommu_group_get(dev);
	if (grp) {
		seq_printf(m, "IOMMUTEST kmod_iommu_group PASS group=%d\n", iommu_group_id(grp));
		iommu_group_put(grp);
	} else {
		seq_printf(m, "IOMMUTEST kmod_iommu_group FAIL %s has no IOMMU group\n",
			   pci_name(pdev));
	}

	dom = iommu_get_domain_for_dev(dev);
	if (dom)
		seq_printf(m, "IOMMUTEST kmod_default_domain PASS type=%s(%#x)\n",
			   domain_type_name(dom->type), dom->type);
	else
		seq_printf(m, "IOMMUTEST kmod_default_domain FAIL no domain attached\n");

dma_map:
	/* One page through the DMA API of the device: an IOVA mapping and its unmap. */
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		seq_printf(m, "IOMMUTEST kmod_dma_map SKIP no memory for a test page\n");
		return;
	}
	iova = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
	if (dma_mapping_error(dev, iova)) {
		seq_printf(m, "IOMMUTEST kmod_dma_map FAIL dma_map_page failed\n");
	} else {
		phys_addr_t phys = page_to_phys(page);

		if (dom && dom->type != IOMMU_DOMAIN_IDENTITY && (u64)iova == (u64)phys)
			seq_printf(m, "IOMMUTEST kmod_dma_map FAIL iova equals phys %#llx in a translated domain\n",
				   (u64)phys);
		else
			seq_printf(m, "IOMMUTEST kmod_dma_map PASS iova=%#llx phys=%#llx\n",
				   (u64)iova, (u64)phys);
		dma_unmap_page(dev, iova, PAGE_SIZE, DMA_BIDIRECTIONAL);
	}
	__free_page(page);
}

/*
 * What the kernel programmed into the first DMAR unit, read back from its registers (a second
 * uncached mapping of the unit's page; reads only).
 */
static void test_dmar_registers(struct seq_file *m)
{
	void __iomem *regs;
	u64 ecap, rtaddr;
	u32 gsts, ttm;
	bool sm_asked = sm == 1 || (sm == -1 && IS_ENABLED(CONFIG_INTEL_IOMMU_SCALABLE_MODE_DEFAULT_ON));

	if (!dmar_base) {
		const char *why = dmar_table ? "no Intel IOMMU (dmar) unit registered" :
			"no Intel IOMMU (dmar) unit: --iommu intel-iommu";

		seq_printf(m, "IOMMUTEST kmod_translation_enabled SKIP %s\n", why);
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP %s\n", why);
		return;
	}
	regs = ioremap(dmar_base, PAGE_SIZE);
	if (!regs) {
		seq_printf(m, "IOMMUTEST kmod_translation_enabled FAIL cannot map registers at %#lx\n", dmar_base);
		seq_printf(m, "IOMMUTEST kmod_scalable_mode FAIL cannot map registers at %#lx\n", dmar_base);
		return;
	}
	ecap = readq(regs + DMAR_ECAP_REG);
	gsts = readl(regs + DMAR_GSTS_REG);
	rtaddr = readq(regs + DMAR_RTADDR_REG);
	iounmap(regs);
	ttm = (u32)(rtaddr >> RTADDR_TTM_SHIFT) & 3;

	if (gsts & GSTS_TES)
		seq_printf(m, "IOMMUTEST kmod_translation_enabled PASS GSTS=%#x (TES%s%s)\n", gsts,
			   gsts & GSTS_QIES ? " QIES" : "", gsts & GSTS_IRES ? " IRES" : "");
	else
		seq_printf(m, "IOMMUTEST kmod_translation_enabled FAIL GSTS.TES=0 (GSTS=%#x)\n", gsts);

	if (!(ecap & ECAP_SMTS))
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP hardware has no scalable mode (ECAP.SMTS=0, ecap=%#llx): --iommu intel-iommu,x-scalable-mode=on\n",
			   ecap);
	else if (ttm == 1)
		seq_printf(m, "IOMMUTEST kmod_scalable_mode PASS RTADDR.TTM=01 (scalable), ecap=%#llx\n", ecap);
	else if (!(ecap & ECAP_QI))
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP Linux runs scalable mode only with queued invalidation (ECAP.QI=0, ecap=%#llx): --iommu ...,qi=on\n",
			   ecap);
	else if (sm_asked)
		seq_printf(m, "IOMMUTEST kmod_scalable_mode FAIL scalable mode asked and ECAP.SMTS=1, but RTADDR.TTM=%u\n",
			   ttm);
	else
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP scalable mode not asked (RTADDR.TTM=%u): intel_iommu=sm_on\n", ttm);
}

/*
 * The PASID test device (vmm/docs/pasid-device.md): 1af4:10f7, BAR0 with eight work queues.
 * The module does not bind a PCI driver to it: at load it enables the function, maps BAR0 and
 * (5.10 and 6.12) registers it as an mdev parent whose mdevs each wrap one work queue with its
 * own PASID and IOMMU domain. The report runs the RID-level tests; /init then creates two
 * mdevs through sysfs and reads /sys/kernel/debug/iommutest/mdev, which runs the mdev tests.
 * Every wait is bounded; a timeout is a FAIL.
 */
#define PT_VENDOR 0x1af4
#define PT_DEVICE 0x10f7
#define PT_GCTL 0x0c
#define PT_ERR_STATUS 0x14
#define PT_WQ(n, r) (0x1000 + (n) * 0x100 + (r))
#define PT_WQ_PASID 0x00
#define PT_WQ_RING_BASE 0x08
#define PT_WQ_RING_SIZE 0x10
#define PT_WQ_HEAD 0x14
#define PT_WQ_TAIL 0x18
#define PT_WQ_CTL 0x1c
#define PT_WQ_STATUS 0x20
#define PT_WQ_ERROR 0x24
#define PT_WQ_FAULT_ADDR 0x28
#define PT_PASID_EN (1U << 31)
#define PT_DESC_IRQ 0x01		/* descriptor flag: completion interrupt (MSI-X vector n) */
#define PT_NUM_VECTORS 9		/* MSI-X: vector n = WQ n completion, vector 8 = error */
#define PT_VEC_ERROR 8
#define PT_OP_COPY 1
#define PT_OP_FILL 2
#define PT_OP_COMPARE 3
#define PT_ST_SUCCESS 1
#define PT_ERR_TRANSLATION 1
#define PT_ERR_RING_READ 4
/* Queue 0: DMA API tests; queues 1..PT_MDEV_MAX: one per mdev; queue 7: a PASID nobody attached. */
#define PT_MDEV_MAX 4
#define PT_WQ_STRAY 7

/* VT-d fault reasons (VT-d spec 7.1.3, tables of non-recoverable fault conditions). */
#define VTD_FR_WRITE 0x05		/* legacy: write to a page without W (or not present) */
#define VTD_FR_READ 0x06		/* legacy: read from a page without R (or not present) */
#define VTD_FR_SM_PASID_NP 0x59		/* SM: PASID table entry not present */
#define VTD_FR_SM_FL_NP 0x71		/* SM: first-level paging entry not present */
#define VTD_FR_SM_SL_NP 0x79		/* SM: second-level paging entry not present (R=W=0) */
#define VTD_FR_SM_WRITE 0x85		/* SM: write without write permission */
#define ECAP_FLTS (1ULL << 47)		/* 11.4.3 First Level Translation Support */
#define ECAP_DT (1ULL << 2)		/* Device-TLB support (ATS) */
#define ECAP_PRS (1ULL << 29)		/* Page Request Support */
#define ECAP_PASID (1ULL << 40)		/* Process Address Space ID Support */
#define ECAP_PSS(e) ((unsigned int)((e) >> 35) & 0x1f)	/* PASID Size Supported: PSS+1 bits */

struct pt_desc {
	u8 op, flags;
	u16 rsvd;
	u32 len;
	u64 src, dst, pattern, cpl;
	u64 rsvd2[3];
} __packed;

struct pt_cpl {
	u8 status, rsvd[3];
	u32 bytes;
	u64 fault, result, rsvd2;
} __packed;

/* Memory one queue uses: ring (2 slots), completion record, 2 data pages; CPU view + IOVAs. */
struct pt_mem {
	void *ring, *cpl, *src, *dst, *priv;
	u64 ring_iova, cpl_iova, src_iova, dst_iova;
};

struct pt_dev {
	struct pci_dev *pdev;
	void __iomem *bar;
	bool scalable;		/* RTADDR.TTM = scalable */
	bool first_level;	/* ECAP.FLTS: the kernels here then use first-level tables */
	u64 ecap;		/* the first DMAR unit's ECAP (0: none) */
	int setup_err;		/* enabling the function at load */
	int aux_ret;		/* 5.10: iommu_dev_enable_feature(AUX) at load */
	int mdev_ret;		/* mdev parent registration at load (1: not tried) */
	unsigned long last_fault;	/* jiffies of the last fault a test provoked */
	int msix_ret;		/* pci_alloc_irq_vectors / request_irq at load (1: not tried) */
	int irq_wq0, irq_err;	/* Linux IRQs of MSI-X vectors 0 and PT_VEC_ERROR */
	atomic_t n_wq0, n_err;	/* interrupts taken on them */
};

static struct pt_dev pt = { .mdev_ret = 1, .aux_ret = 1, .msix_ret = 1 };
/* Serialises the tests with mdev create/remove (all of them program queues). */
static DEFINE_MUTEX(pt_lock);

/*
 * Why the DMA-API queue's IOVAs are not translated, so that a DMA to an IOVA never mapped
 * cannot fault in the IOMMU (the device only sees an address outside RAM), or NULL.
 */
static const char *pt_untranslated_reason(struct pt_dev *p)
{
	struct iommu_domain *dom;
	const char *why = no_iommu_reason(&p->pdev->dev);

	if (why)
		return why;
	dom = iommu_get_domain_for_dev(&p->pdev->dev);
	if (dom && dom->type == IOMMU_DOMAIN_IDENTITY)
		return "the device's domain is identity (pass-through, iommu=pt): nothing to fault; translated without iommu=pt";
	return NULL;
}

/*
 * Why requests with PASID cannot be tested (the tests behind pasid_flows), or NULL: they need
 * a unit in scalable mode with ECAP.PASID.
 */
static const char *pt_no_pasid_reason(struct pt_dev *p)
{
	const char *why = no_iommu_reason(&p->pdev->dev);

	if (why)
		return "no IOMMU (no ACPI DMAR table): no requests with PASID; --iommu intel-iommu,x-scalable-mode=on";
	if (!p->ecap)
		return "no Intel IOMMU (dmar) unit registered: no requests with PASID";
	if (!(p->ecap & ECAP_SMTS))
		return "the IOMMU has no scalable mode (ECAP.SMTS=0): no requests with PASID; --iommu intel-iommu,x-scalable-mode=on";
	if (!p->scalable && !(p->ecap & ECAP_QI))
		return "Linux runs scalable mode only with queued invalidation (ECAP.QI=0): no requests with PASID; --iommu ...,qi=on";
	if (!p->scalable)
		return "the kernel did not put the IOMMU in scalable mode (RTADDR.TTM!=01): no requests with PASID; intel_iommu=sm_on";
	if (!(p->ecap & ECAP_PASID))
		return "the IOMMU has no PASID support (ECAP.PASID=0): --iommu ...,x-pasid-mode=on";
	return NULL;
}

/*
 * A PASID nothing is attached to, within the PASIDs the unit supports (ECAP.PSS: PSS+1 bits)
 * and the device's width, differing from a and b: the PASID-table entry it selects is in the
 * table the kernel set up, and not present. The highest of the first 64 (the leaf table that
 * holds RID_PASID 0) that fits.
 */
static int pt_stray_pasid(struct pt_dev *p, int a, int b)
{
	int limit = 1 << min(ECAP_PSS(p->ecap) + 1, 20U);
	int max = pci_max_pasids(p->pdev);
	int stray = 0x3f;

	if (max > 0 && max < limit)
		limit = max;
	if (stray >= limit)
		stray = limit - 1;
	while (stray > 1 && (stray == a || stray == b))
		stray--;
	return stray;
}

static void pt_wq_setup(struct pt_dev *p, int n, u32 pasid_reg, u64 ring_iova)
{
	writel(0, p->bar + PT_WQ(n, PT_WQ_CTL));
	writel(pasid_reg, p->bar + PT_WQ(n, PT_WQ_PASID));
	writel(lower_32_bits(ring_iova), p->bar + PT_WQ(n, PT_WQ_RING_BASE));
	writel(upper_32_bits(ring_iova), p->bar + PT_WQ(n, PT_WQ_RING_BASE) + 4);
	writel(2, p->bar + PT_WQ(n, PT_WQ_RING_SIZE));
	writel(1, p->bar + PT_WQ(n, PT_WQ_CTL));
}

/*
 * Run one descriptor on queue n; returns the completion status (0 when the queue stopped
 * before writing one), or -ETIMEDOUT. *err gets WQ_ERROR.
 */
static int pt_exec_flags(struct pt_dev *p, int n, struct pt_mem *mm, u8 op, u8 flags, u32 len,
			 u64 src, u64 dst, u64 pattern, u32 *err)
{
	u32 head = readl(p->bar + PT_WQ(n, PT_WQ_HEAD)) & 1;
	struct pt_desc *d = (struct pt_desc *)mm->ring + head;
	struct pt_cpl *c = mm->cpl;
	int i;

	memset(d, 0, sizeof(*d));
	memset(c, 0, sizeof(*c));
	d->op = op;
	d->flags = flags;
	d->len = len;
	d->src = src;
	d->dst = dst;
	d->pattern = pattern;
	d->cpl = mm->cpl_iova;
	wmb();
	writel((head + 1) & 1, p->bar + PT_WQ(n, PT_WQ_TAIL));
	for (i = 0; i < 1000; i++) {
		u32 st = readl(p->bar + PT_WQ(n, PT_WQ_STATUS));

		rmb();
		if (READ_ONCE(c->status) || (st & 2)) {
			*err = readl(p->bar + PT_WQ(n, PT_WQ_ERROR));
			return READ_ONCE(c->status);
		}
		udelay(10);
	}
	*err = readl(p->bar + PT_WQ(n, PT_WQ_ERROR));
	return -ETIMEDOUT;
}

static int pt_exec(struct pt_dev *p, int n, struct pt_mem *mm, u8 op, u32 len, u64 src, u64 dst,
		   u64 pattern, u32 *err)
{
	return pt_exec_flags(p, n, mm, op, 0, len, src, dst, pattern, err);
}

/* Fill, copy, compare on queue n and check the bytes in memory. Returns 0 or a reason. */
static const char *pt_flow(struct pt_dev *p, int n, struct pt_mem *mm, u64 seed)
{
	u32 err;
	int st;

	memset(mm->src, 0, PAGE_SIZE);
	memset(mm->dst, 0, PAGE_SIZE);
	st = pt_exec(p, n, mm, PT_OP_FILL, PAGE_SIZE, 0, mm->src_iova, seed, &err);
	if (st != PT_ST_SUCCESS)
		return st == -ETIMEDOUT ? "fill timed out" : "fill failed";
	if (*(u64 *)mm->src != seed || *(u64 *)(mm->src + PAGE_SIZE - 8) != seed)
		return "fill wrote wrong bytes";
	st = pt_exec(p, n, mm, PT_OP_COPY, PAGE_SIZE, mm->src_iova, mm->dst_iova, 0, &err);
	if (st != PT_ST_SUCCESS)
		return st == -ETIMEDOUT ? "copy timed out" : "copy failed";
	if (memcmp(mm->src, mm->dst, PAGE_SIZE))
		return "copy: bytes differ";
	st = pt_exec(p, n, mm, PT_OP_COMPARE, PAGE_SIZE, mm->src_iova, mm->dst_iova, 0, &err);
	if (st != PT_ST_SUCCESS)
		return st == -ETIMEDOUT ? "compare timed out" : "compare reported a mismatch";
	return NULL;
}

/*
 * The kernel log, read from the module (kmsg_dump iterator): the DMAR fault lines that
 * dmar_fault() prints. 5.10 iterates with a struct kmsg_dumper (whose reads need .active),
 * later kernels with a struct kmsg_dump_iter.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 13, 0)
typedef struct kmsg_dump_iter pt_kmsg_iter;
static void pt_kmsg_start(pt_kmsg_iter *it)
{
	memset(it, 0, sizeof(*it));
	kmsg_dump_rewind(it);
}
#else
typedef struct kmsg_dumper pt_kmsg_iter;
static void pt_kmsg_start(pt_kmsg_iter *it)
{
	memset(it, 0, sizeof(*it));
	it->active = true;
	kmsg_dump_rewind(it);
}
#endif

static char pt_klog_line[512];
static char pt_klog_other[256];

/* Lines in the kernel log now (a mark: later searches skip them). */
static u64 pt_klog_mark(void)
{
	pt_kmsg_iter it;
	size_t len;
	u64 n = 0;

	pt_kmsg_start(&it);
	while (kmsg_dump_get_line(&it, false, pt_klog_line, sizeof(pt_klog_line) - 1, &len))
		n++;
	return n;
}

/*
 * Whether a line after the first `skip` lines contains `needle`; when none does, `last` (if
 * given) gets the last of those lines that contains "DMAR" (for the FAIL detail).
 */
static bool pt_klog_find(u64 skip, const char *needle, char *last, size_t last_len)
{
	pt_kmsg_iter it;
	size_t len;
	u64 n = 0;

	pt_kmsg_start(&it);
	while (kmsg_dump_get_line(&it, false, pt_klog_line, sizeof(pt_klog_line) - 1, &len)) {
		if (n++ < skip)
			continue;
		pt_klog_line[min(len, sizeof(pt_klog_line) - 1)] = 0;
		strim(pt_klog_line);
		if (strstr(pt_klog_line, needle))
			return true;
		if (last && strstr(pt_klog_line, "DMAR"))
			strscpy(last, pt_klog_line, last_len);
	}
	return false;
}

/* What a provoked fault must look like: at the device and in the DMAR fault line. */
struct pt_fault_want {
	u32 wq_err;	/* WQ_ERROR */
	u8 reason;	/* VT-d fault reason */
	bool read;	/* DMA Read (ring fetch) or DMA Write (FILL) */
	u64 addr;	/* faulting IOVA */
	int pasid;	/* -1: request without PASID */
};

/*
 * The part of the DMAR fault line the kernel prints for `w` (drivers/iommu/intel/dmar.c,
 * dmar_fault_do_one): 5.10 prints the reason in decimal and "PASID ffffffff" for none; 6.x
 * prints it in hex and "NO_PASID". The address is the page the fault record holds.
 */
static void pt_fault_needle(char *buf, size_t len, const struct pt_fault_want *w)
{
	unsigned int bus = pt.pdev->bus->number, devfn = pt.pdev->devfn;
	u64 page = w->addr & ~0xfffULL;
	const char *t = w->read ? "Read" : "Write";

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 0, 0)
	snprintf(buf, len, "[DMA %s] Request device [%02x:%02x.%d] PASID %x fault addr %llx [fault reason %02d]",
		 t, bus, PCI_SLOT(devfn), PCI_FUNC(devfn), w->pasid < 0 ? 0xffffffffU : (u32)w->pasid,
		 page, w->reason);
#else
	if (w->pasid < 0)
		snprintf(buf, len, "[DMA %s NO_PASID] Request device [%02x:%02x.%d] fault addr 0x%llx [fault reason 0x%02x]",
			 t, bus, PCI_SLOT(devfn), PCI_FUNC(devfn), page, w->reason);
	else
		snprintf(buf, len, "[DMA %s PASID 0x%x] Request device [%02x:%02x.%d] fault addr 0x%llx [fault reason 0x%02x]",
			 t, w->pasid, bus, PCI_SLOT(devfn), PCI_FUNC(devfn), page, w->reason);
#endif
}

/* The same line with the PCI domain before the requester's bus ("[0000:00:02.0]"). */
static void pt_fault_needle_domain(char *buf, size_t len, const char *needle)
{
	const char *at = strstr(needle, "Request device [");
	size_t head;

	if (!at) {
		strscpy(buf, needle, len);
		return;
	}
	head = at - needle + strlen("Request device [");
	snprintf(buf, len, "%.*s%04x:%s", (int)head, needle, pci_domain_nr(pt.pdev->bus), needle + head);
}

/*
 * The fault reason for a DMA to an IOVA the domain does not map. In scalable mode with
 * ECAP.FLTS, 5.10 builds first-level tables for every domain; 6.1 and 6.12 build them for
 * DMA-API domains and second-level tables for unmanaged / paging domains (measured: 6.12's
 * iommu_paging_domain_alloc gives reason 0x79). Legacy mode reports not-present as a
 * permission fault (VT-d 3.7).
 */
static u8 pt_np_reason(bool unmanaged, bool read)
{
	bool fl = pt.first_level;

	if (!pt.scalable)
		return read ? VTD_FR_READ : VTD_FR_WRITE;
	/*
	 * Measured: 6.1 and 6.12 give paging domains second-level tables, 7.3 first-level ones
	 * (when the unit has FLTS); the switch lies between 6.12 and 7.3 (6.15 assumed).
	 */
	if (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0) &&
	    LINUX_VERSION_CODE < KERNEL_VERSION(6, 15, 0) && unmanaged)
		fl = false;
	return fl ? VTD_FR_SM_FL_NP : VTD_FR_SM_SL_NP;
}

static u8 pt_ro_reason(void)
{
	return pt.scalable ? VTD_FR_SM_WRITE : VTD_FR_WRITE;
}

/*
 * dmar_fault() prints through one ratelimit state (DEFAULT_RATELIMIT_*: 10 calls per 5 s) and
 * spends two calls per fault (the status line and the record). With faults 1.3 s apart the
 * record line of the fourth one in a window was still dropped (measured on 6.12: the status
 * line printed, the record cleared, no record line), so at most two provoked faults share a
 * window: 2.6 s apart.
 */
static void pt_pace_fault(void)
{
	unsigned long next = pt.last_fault + msecs_to_jiffies(2600);

	if (pt.last_fault && time_before(jiffies, next))
		msleep(jiffies_to_msecs(next - jiffies));
}

/*
 * A DMA that must fault: run `op` on queue n (a FILL of 8 bytes at dst, or anything when the
 * ring read itself faults), then check the device's WQ_ERROR, WQ_FAULT_ADDR and ERR_STATUS bit
 * and wait (2 s at most) for the DMAR fault line with the expected reason in the kernel log.
 */
static void pt_expect_fault(struct seq_file *m, struct pt_dev *p, const char *name, int n,
			    struct pt_mem *mm, u64 dst, const struct pt_fault_want *w)
{
	char needle[160], needle2[176];
	u32 err = 0, es = 0, wst;
	u64 fa = 0, mark = 0;
	int st, i, attempt;
	bool logged = false;

	pt_fault_needle(needle, sizeof(needle), w);
	/* 7.3 prints the requester with its PCI domain ("[0000:00:02.0]"), 6.12 without. */
	pt_fault_needle_domain(needle2, sizeof(needle2), needle);
	for (attempt = 0; attempt < 2 && !logged; attempt++) {
		if (attempt) {
			/*
			 * No line: dmar_fault() may have rate-limited it. Once, in a fresh
			 * ratelimit window (5 s after the last fault), restart the queue with
			 * its configuration and provoke the same fault again.
			 */
			u32 pasid_reg = readl(p->bar + PT_WQ(n, PT_WQ_PASID));
			u64 ring = readq(p->bar + PT_WQ(n, PT_WQ_RING_BASE));
			unsigned long next = p->last_fault + msecs_to_jiffies(5100);

			if (time_before(jiffies, next))
				msleep(jiffies_to_msecs(next - jiffies));
			pt_wq_setup(p, n, pasid_reg, ring);
		} else {
			pt_pace_fault();
		}
		mark = pt_klog_mark();
		st = pt_exec(p, n, mm, PT_OP_FILL, 8, 0, dst, 0x5a, &err);
		p->last_fault = jiffies;
		es = readl(p->bar + PT_ERR_STATUS);
		wst = readl(p->bar + PT_WQ(n, PT_WQ_STATUS));
		fa = readq(p->bar + PT_WQ(n, PT_WQ_FAULT_ADDR));
		writel(BIT(n), p->bar + PT_ERR_STATUS);
		if (st == -ETIMEDOUT && !(wst & 2)) {
			seq_printf(m, "IOMMUTEST %s FAIL WQ%d: no completion and no error within the timeout\n", name, n);
			return;
		}
		if (err != w->wq_err || !(es & BIT(n)) || (fa & ~0xfffULL) != (w->addr & ~0xfffULL)) {
			seq_printf(m, "IOMMUTEST %s FAIL WQ%d status=%d error=%u (want %u) fault_addr=%#llx (want %#llx) err_status=%#x\n",
				   name, n, st, err, w->wq_err, fa, w->addr, es);
			return;
		}
		for (i = 0; i < 200 && !logged; i++) {
			logged = pt_klog_find(mark, needle, NULL, 0) ||
				 pt_klog_find(mark, needle2, NULL, 0);
			if (!logged)
				msleep(10);
		}
	}
	if (logged) {
		seq_printf(m, "IOMMUTEST %s PASS WQ%d error=%u fault_addr=%#llx err_status=%#x; kernel log%s: DMAR: %s\n",
			   name, n, err, fa, es, attempt > 1 ? " (second try, the first line was not printed)" : "",
			   needle);
	} else {
		void __iomem *regs = dmar_base ? ioremap(dmar_base, PAGE_SIZE) : NULL;
		u32 fsts = 0, fectl = 0;

		/* 11.4.7: FSTS at 0x34, FECTL at 0x38 show whether the fault event is stuck. */
		if (regs) {
			fsts = readl(regs + 0x34);
			fectl = readl(regs + 0x38);
			iounmap(regs);
		}
		pt_klog_other[0] = 0;
		pt_klog_find(mark, needle, pt_klog_other, sizeof(pt_klog_other));
		seq_printf(m, "IOMMUTEST %s FAIL WQ%d error=%u fault_addr=%#llx, but no \"%s\" in the kernel log within 2 s, twice (FSTS=%#x FECTL=%#x; last DMAR line: \"%s\")\n",
			   name, n, err, fa, needle, fsts, fectl, pt_klog_other);
	}
}

/*
 * MSI-X (vmm/docs/pasid-device.md): descriptor flag bit 0 asks for the queue's completion
 * vector, a queue stopping with an error fires vector 8. With interrupt remapping on, these
 * are remappable-format MSIs (VT-d 5.1.4). The handlers only count.
 */
static irqreturn_t pt_irq_wq0(int irq, void *data)
{
	atomic_inc(&pt.n_wq0);
	return IRQ_HANDLED;
}

static irqreturn_t pt_irq_err(int irq, void *data)
{
	atomic_inc(&pt.n_err);
	return IRQ_HANDLED;
}

/* Wait (1 s at most) until *cnt reaches want. */
static bool pt_wait_count(atomic_t *cnt, int want)
{
	unsigned long end = jiffies + HZ;

	while (atomic_read(cnt) < want && time_before(jiffies, end))
		msleep(1);
	return atomic_read(cnt) >= want;
}

#define PT_MSIX_DESCS 4

/*
 * PT_MSIX_DESCS FILLs on queue 0 with the completion-interrupt flag, one at a time: each must
 * bring exactly one interrupt on vector 0 before the next runs. Returns 0 or a reason.
 */
static const char *pt_msix_completions(struct pt_dev *p, struct pt_mem *mm)
{
	int base = atomic_read(&p->n_wq0);
	u32 err;
	int i;

	for (i = 0; i < PT_MSIX_DESCS; i++) {
		if (pt_exec_flags(p, 0, mm, PT_OP_FILL, PT_DESC_IRQ, 8, 0, mm->dst_iova, i, &err) !=
		    PT_ST_SUCCESS)
			return "a FILL with the interrupt flag did not complete";
		if (!pt_wait_count(&p->n_wq0, base + i + 1))
			return "no completion interrupt within 1 s";
	}
	return NULL;
}

static void pt_msix_report(struct seq_file *m, struct pt_dev *p, const char *why, int c0, int e0)
{
	int c, e;

	if (p->msix_ret) {
		seq_printf(m, "IOMMUTEST pasid_dev_msix FAIL allocating or requesting the MSI-X vectors: %d\n",
			   p->msix_ret);
		return;
	}
	/* The fault of pasid_neg_unmapped_iova fires the error vector. */
	if (!why && !pt_wait_count(&p->n_err, e0 + 1))
		why = "no error interrupt within 1 s of the provoked fault";
	c = atomic_read(&p->n_wq0) - c0;
	e = atomic_read(&p->n_err) - e0;
	if (!why && c != PT_MSIX_DESCS)
		why = "completion interrupts differ from the descriptors that asked for one";
	if (why)
		seq_printf(m, "IOMMUTEST pasid_dev_msix FAIL %s (%d completion, %d error interrupts; want %d and >= 1)\n",
			   why, c, e, PT_MSIX_DESCS);
	else
		seq_printf(m, "IOMMUTEST pasid_dev_msix PASS %d %d: completion interrupts on MSI-X vector 0 (irq %d) for %d descriptors, error interrupts on vector %d (irq %d) after the provoked fault\n",
			   c, e, p->irq_wq0, PT_MSIX_DESCS, PT_VEC_ERROR, p->irq_err);
}

/* Through the DMA API at RID level (queue without PASID). */
static void pt_test_dma_api(struct seq_file *m, struct pt_dev *p)
{
	struct device *dev = &p->pdev->dev;
	struct pt_fault_want w = { .wq_err = PT_ERR_TRANSLATION, .pasid = -1, .addr = 0x7f0000000000ULL };
	struct pt_mem mm;
	dma_addr_t a, b, c, d;
	const char *why, *msix_why = NULL;
	int c0, e0;

	if (dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64))) {
		seq_printf(m, "IOMMUTEST pasid_dev_dma_api FAIL dma_set_mask failed\n");
		return;
	}
	mm.ring = dma_alloc_coherent(dev, PAGE_SIZE, &a, GFP_KERNEL);
	mm.cpl = dma_alloc_coherent(dev, PAGE_SIZE, &b, GFP_KERNEL);
	mm.src = dma_alloc_coherent(dev, PAGE_SIZE, &c, GFP_KERNEL);
	mm.dst = dma_alloc_coherent(dev, PAGE_SIZE, &d, GFP_KERNEL);
	if (!mm.ring || !mm.cpl || !mm.src || !mm.dst) {
		seq_printf(m, "IOMMUTEST pasid_dev_dma_api FAIL no coherent memory\n");
		goto out;
	}
	mm.ring_iova = a;
	mm.cpl_iova = b;
	mm.src_iova = c;
	mm.dst_iova = d;
	pt_wq_setup(p, 0, 0, a);
	why = pt_flow(p, 0, &mm, 0x1122334455667788ULL);
	if (why)
		seq_printf(m, "IOMMUTEST pasid_dev_dma_api FAIL %s\n", why);
	else
		seq_printf(m, "IOMMUTEST pasid_dev_dma_api PASS fill/copy/compare 4 KiB via DMA API (ring iova %#llx)\n",
			   (u64)a);
	c0 = atomic_read(&p->n_wq0);
	e0 = atomic_read(&p->n_err);
	if (!p->msix_ret)
		msix_why = pt_msix_completions(p, &mm);
	/* Negative: an IOVA the DMA API never mapped (far above the allocations). */
	why = pt_untranslated_reason(p);
	if (why) {
		u32 err = 0;
		int st;

		/*
		 * Untranslated, that address is outside RAM: the device still stops the queue
		 * (and fires the error vector pasid_dev_msix counts), but no IOMMU faults.
		 */
		st = pt_exec(p, 0, &mm, PT_OP_FILL, 8, 0, w.addr, 0x5a, &err);
		writel(BIT(0), p->bar + PT_ERR_STATUS);
		seq_printf(m, "IOMMUTEST pasid_neg_unmapped_iova SKIP %s (device: status %d error %u at %#llx)\n",
			   why, st, err, w.addr);
	} else {
		w.reason = pt_np_reason(false, false);
		pt_expect_fault(m, p, "pasid_neg_unmapped_iova", 0, &mm, w.addr, &w);
	}
	writel(0, p->bar + PT_WQ(0, PT_WQ_CTL));
	pt_msix_report(m, p, msix_why, c0, e0);
out:
	if (mm.ring)
		dma_free_coherent(dev, PAGE_SIZE, mm.ring, a);
	if (mm.cpl)
		dma_free_coherent(dev, PAGE_SIZE, mm.cpl, b);
	if (mm.src)
		dma_free_coherent(dev, PAGE_SIZE, mm.src, c);
	if (mm.dst)
		dma_free_coherent(dev, PAGE_SIZE, mm.dst, d);
}

/*
 * Pages for a queue whose IOVAs are chosen here and mapped into an unmanaged domain: ring,
 * completion, src, dst, a read-only page, and a page private to the queue's domain at an IOVA
 * no other domain maps (PT_IOVA_PRIV(wq)).
 */
#define PT_PAGES 6
#define PT_IOVA_RING 0x100000UL
#define PT_IOVA_CPL 0x101000UL
#define PT_IOVA_SRC 0x102000UL
#define PT_IOVA_DST 0x103000UL
#define PT_IOVA_RO 0x104000UL
#define PT_IOVA_PRIV(wq) (0x200000UL + (unsigned long)(wq) * 0x1000UL)

static int pt_mem_alloc(struct pt_mem *mm, struct page **pages)
{
	int i;

	for (i = 0; i < PT_PAGES; i++) {
		pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!pages[i])
			return -ENOMEM;
	}
	mm->ring = page_address(pages[0]);
	mm->cpl = page_address(pages[1]);
	mm->src = page_address(pages[2]);
	mm->dst = page_address(pages[3]);
	mm->priv = page_address(pages[5]);
	mm->ring_iova = PT_IOVA_RING;
	mm->cpl_iova = PT_IOVA_CPL;
	mm->src_iova = PT_IOVA_SRC;
	mm->dst_iova = PT_IOVA_DST;
	return 0;
}

static void pt_mem_free(struct page **pages)
{
	int i;

	for (i = 0; i < PT_PAGES; i++)
		if (pages[i])
			__free_page(pages[i]);
}

static int pt_map(struct iommu_domain *dom, struct page **pages, int wq)
{
	const unsigned long iovas[PT_PAGES] = { PT_IOVA_RING, PT_IOVA_CPL, PT_IOVA_SRC, PT_IOVA_DST,
						PT_IOVA_RO, PT_IOVA_PRIV(wq) };
	int i, ret;

	for (i = 0; i < PT_PAGES; i++) {
		int prot = i == 4 ? IOMMU_READ : IOMMU_READ | IOMMU_WRITE;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
		ret = iommu_map(dom, iovas[i], page_to_phys(pages[i]), PAGE_SIZE, prot, GFP_KERNEL);
#else
		ret = iommu_map(dom, iovas[i], page_to_phys(pages[i]), PAGE_SIZE, prot);
#endif
		if (ret)
			return ret;
	}
	return 0;
}

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0) || LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#define PT_MDEV 1
/*
 * mdevs: each wraps one work queue (1 + slot) with its own domain attached at a PASID of the
 * parent. 5.10 (the 2020 aux-domain API): iommu_domain_alloc, iommu_aux_attach_device(domain,
 * parent), iommu_aux_get_pasid, mdev_set_iommu_device, iommu_map; 6.12:
 * iommu_paging_domain_alloc, iommu_alloc_global_pasid, iommu_attach_device_pasid, iommu_map.
 */
struct pt_mdev {
	struct mdev_device *mdev;
	int wq;
	struct iommu_domain *dom;
	int pasid;
	bool attached;
	struct page *pages[PT_PAGES];
	struct pt_mem mm;
};

static struct pt_mdev *pt_mdevs[PT_MDEV_MAX];
static char pt_mdev_err[160];
static struct dentry *pt_mdev_file;

static void pt_mdev_detach(struct pt_mdev *s)
{
	struct device *parent = &pt.pdev->dev;

	writel(0, pt.bar + PT_WQ(s->wq, PT_WQ_CTL));
	if (!s->attached)
		return;
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
	iommu_aux_detach_device(s->dom, parent);
#else
	iommu_detach_device_pasid(s->dom, parent, s->pasid);
#endif
	s->attached = false;
}

static void pt_mdev_free(struct pt_mdev *s)
{
	pt_mdev_detach(s);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	if (s->pasid >= 0)
		iommu_free_global_pasid(s->pasid);
#endif
	if (s->dom)
		iommu_domain_free(s->dom);
	pt_mem_free(s->pages);
	kfree(s);
}

/* Called for each mdev /init creates: its domain, PASID, mappings and queue. */
static int pt_mdev_attach(struct mdev_device *mdev)
{
	struct device *parent = &pt.pdev->dev;
	struct pt_mdev *s;
	int i, ret;
	u32 wst;

	mutex_lock(&pt_lock);
	for (i = 0; i < PT_MDEV_MAX && pt_mdevs[i]; i++)
		;
	if (i == PT_MDEV_MAX) {
		mutex_unlock(&pt_lock);
		return -ENOSPC;
	}
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s) {
		mutex_unlock(&pt_lock);
		return -ENOMEM;
	}
	s->wq = 1 + i;
	s->pasid = -1;
	ret = -ENOMEM;
	if (pt_mem_alloc(&s->mm, s->pages)) {
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "no memory for the test pages");
		goto fail;
	}
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
	s->dom = iommu_domain_alloc(&pci_bus_type);
	if (!s->dom) {
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_domain_alloc failed");
		goto fail;
	}
	ret = iommu_aux_attach_device(s->dom, parent);
	if (ret) {
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_aux_attach_device: %d", ret);
		goto fail;
	}
	s->attached = true;
	s->pasid = iommu_aux_get_pasid(s->dom, parent);
	if (s->pasid < 0) {
		ret = s->pasid;
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_aux_get_pasid: %d", ret);
		goto fail;
	}
	ret = mdev_set_iommu_device(mdev_dev(mdev), parent);
	if (ret) {
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "mdev_set_iommu_device: %d", ret);
		goto fail;
	}
#else
	s->dom = iommu_paging_domain_alloc(parent);
	if (IS_ERR(s->dom)) {
		ret = PTR_ERR(s->dom);
		s->dom = NULL;
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_paging_domain_alloc: %d", ret);
		goto fail;
	}
	{
		ioasid_t pasid = iommu_alloc_global_pasid(parent);

		if (pasid == IOMMU_PASID_INVALID) {
			ret = -ENOSPC;
			snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_alloc_global_pasid failed");
			goto fail;
		}
		s->pasid = pasid;
	}
	ret = iommu_attach_device_pasid(s->dom, parent, s->pasid, NULL);
	if (ret) {
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_attach_device_pasid(%#x): %d", s->pasid, ret);
		goto fail;
	}
	s->attached = true;
#endif
	ret = pt_map(s->dom, s->pages, s->wq);
	if (ret) {
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "iommu_map: %d", ret);
		goto fail;
	}
	pt_wq_setup(&pt, s->wq, PT_PASID_EN | s->pasid, PT_IOVA_RING);
	wst = readl(pt.bar + PT_WQ(s->wq, PT_WQ_STATUS));
	if ((wst & 3) != 1) {
		ret = -EIO;
		snprintf(pt_mdev_err, sizeof(pt_mdev_err), "WQ%d did not enable with PASID %#x (status %#x error %u)",
			 s->wq, s->pasid, wst, readl(pt.bar + PT_WQ(s->wq, PT_WQ_ERROR)));
		goto fail;
	}
	s->mdev = mdev;
	pt_mdevs[i] = s;
	mutex_unlock(&pt_lock);
	dev_info(parent, "iommutest: mdev %s on WQ%d, PASID %#x\n", dev_name(mdev_dev(mdev)), s->wq, s->pasid);
	return 0;
fail:
	dev_err(parent, "iommutest: mdev %s: %s\n", dev_name(mdev_dev(mdev)), pt_mdev_err);
	pt_mdev_free(s);
	mutex_unlock(&pt_lock);
	return ret;
}

static void pt_mdev_release(struct mdev_device *mdev)
{
	int i;

	mutex_lock(&pt_lock);
	for (i = 0; i < PT_MDEV_MAX; i++) {
		if (pt_mdevs[i] && pt_mdevs[i]->mdev == mdev) {
			pt_mdev_free(pt_mdevs[i]);
			pt_mdevs[i] = NULL;
		}
	}
	mutex_unlock(&pt_lock);
}

static unsigned int pt_mdev_available(void)
{
	unsigned int i, n = 0;

	for (i = 0; i < PT_MDEV_MAX; i++)
		n += !pt_mdevs[i];
	return n;
}

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
/* 5.10: mdev_register_device with mdev_parent_ops; the type's sysfs attributes are ours. */
static ssize_t name_show(struct kobject *kobj, struct device *dev, char *buf)
{
	return sprintf(buf, "iommutest work queue\n");
}
static MDEV_TYPE_ATTR_RO(name);

static ssize_t available_instances_show(struct kobject *kobj, struct device *dev, char *buf)
{
	return sprintf(buf, "%u\n", pt_mdev_available());
}
static MDEV_TYPE_ATTR_RO(available_instances);

static ssize_t device_api_show(struct kobject *kobj, struct device *dev, char *buf)
{
	return sprintf(buf, "vfio-pci\n");
}
static MDEV_TYPE_ATTR_RO(device_api);

static struct attribute *pt_type_attrs[] = {
	&mdev_type_attr_name.attr,
	&mdev_type_attr_available_instances.attr,
	&mdev_type_attr_device_api.attr,
	NULL,
};

static struct attribute_group pt_type_group = {
	.name = "iommutest_wq",
	.attrs = pt_type_attrs,
};

static struct attribute_group *pt_type_groups[] = { &pt_type_group, NULL };

static int pt_mdev_create(struct kobject *kobj, struct mdev_device *mdev)
{
	return pt_mdev_attach(mdev);
}

static int pt_mdev_remove(struct mdev_device *mdev)
{
	pt_mdev_release(mdev);
	return 0;
}

static const struct mdev_parent_ops pt_mdev_ops = {
	.owner = THIS_MODULE,
	.supported_type_groups = pt_type_groups,
	.create = pt_mdev_create,
	.remove = pt_mdev_remove,
};

static int pt_mdev_register(void)
{
	return mdev_register_device(&pt.pdev->dev, &pt_mdev_ops);
}

static void pt_mdev_unregister(void)
{
	mdev_unregister_device(&pt.pdev->dev);
}
#else
/* 6.12: mdev_register_parent with an mdev_driver whose probe/remove attach and detach. */
static int pt_mdev_probe(struct mdev_device *mdev)
{
	return pt_mdev_attach(mdev);
}

static void pt_mdev_remove(struct mdev_device *mdev)
{
	pt_mdev_release(mdev);
}

static unsigned int pt_mdev_get_available(struct mdev_type *mtype)
{
	return pt_mdev_available();
}

static struct mdev_driver pt_mdev_driver = {
	.device_api = "vfio-pci",
	.max_instances = PT_MDEV_MAX,
	.probe = pt_mdev_probe,
	.remove = pt_mdev_remove,
	.get_available = pt_mdev_get_available,
	.driver = {
		.name = "iommutest_mdev",
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
	},
};

static struct mdev_type pt_mdev_type = {
	.sysfs_name = "iommutest_wq",
	.pretty_name = "iommutest work queue",
};

static struct mdev_type *pt_mdev_types[] = { &pt_mdev_type };
static struct mdev_parent pt_mdev_parent;

static int pt_mdev_register(void)
{
	int ret = mdev_register_driver(&pt_mdev_driver);

	if (ret)
		return ret;
	ret = mdev_register_parent(&pt_mdev_parent, &pt.pdev->dev, &pt_mdev_driver, pt_mdev_types,
				   ARRAY_SIZE(pt_mdev_types));
	if (ret)
		mdev_unregister_driver(&pt_mdev_driver);
	return ret;
}

static void pt_mdev_unregister(void)
{
	mdev_unregister_parent(&pt_mdev_parent);
	mdev_unregister_driver(&pt_mdev_driver);
}
#endif

static const char *pt_domain_desc(struct iommu_domain *d, char *buf, size_t len)
{
	if (!d)
		snprintf(buf, len, "NULL");
	else
		snprintf(buf, len, "%s(%#x)", domain_type_name(d->type), d->type);
	return buf;
}

/* The mdev tests, run when /init reads /sys/kernel/debug/iommutest/mdev after creating two. */
static void pt_mdev_tests(struct seq_file *m)
{
	struct device *parent = &pt.pdev->dev;
	struct pt_fault_want w;
	struct pt_mdev *s[2] = { NULL, NULL };
	struct iommu_domain *dm, *dp;
	struct iommu_group *grp;
	char b1[32], b2[32];
	const char *why;
	u64 seed[2];
	u32 err;
	int i, n = 0, stray, st;

	for (i = 0; i < PT_MDEV_MAX && n < 2; i++)
		if (pt_mdevs[i])
			s[n++] = pt_mdevs[i];
	if (n < 2) {
		seq_printf(m, "IOMMUTEST mdev_attach FAIL %d mdev(s) attached, the tests need 2 (last error: %s)\n",
			   n, pt_mdev_err[0] ? pt_mdev_err : "none");
		return;
	}
	if (s[0]->pasid == s[1]->pasid) {
		seq_printf(m, "IOMMUTEST mdev_attach FAIL both mdevs got PASID %#x\n", s[0]->pasid);
		return;
	}
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
	seq_printf(m, "IOMMUTEST mdev_attach PASS mdevs %s (WQ%d) and %s (WQ%d): iommu_domain_alloc + iommu_aux_attach_device(parent) + iommu_aux_get_pasid = %d and %d + mdev_set_iommu_device + iommu_map\n",
		   dev_name(mdev_dev(s[0]->mdev)), s[0]->wq, dev_name(mdev_dev(s[1]->mdev)), s[1]->wq,
		   s[0]->pasid, s[1]->pasid);
#else
	seq_printf(m, "IOMMUTEST mdev_attach PASS mdevs %s (WQ%d) and %s (WQ%d): iommu_paging_domain_alloc + iommu_attach_device_pasid(parent, %d and %d) + iommu_map\n",
		   dev_name(mdev_dev(s[0]->mdev)), s[0]->wq, dev_name(mdev_dev(s[1]->mdev)), s[1]->wq,
		   s[0]->pasid, s[1]->pasid);
#endif

	/* What the core answers for the mdev and for the parent (the 2020 discussion). */
	dm = iommu_get_domain_for_dev(mdev_dev(s[0]->mdev));
	grp = iommu_group_get(mdev_dev(s[0]->mdev));
	if (dm && dm != s[0]->dom)
		seq_printf(m, "IOMMUTEST mdev_domain_for_mdev FAIL iommu_get_domain_for_dev(mdev)=%s is neither NULL nor the mdev's domain\n",
			   pt_domain_desc(dm, b1, sizeof(b1)));
	else
		seq_printf(m, "IOMMUTEST mdev_domain_for_mdev PASS iommu_get_domain_for_dev(mdev)=%s (%s); mdev iommu group %d\n",
			   pt_domain_desc(dm, b1, sizeof(b1)),
			   dm ? "the mdev's own domain" : "the mdev's domain is reachable only as the parent's PASID domain",
			   grp ? iommu_group_id(grp) : -1);
	if (grp)
		iommu_group_put(grp);
	dp = iommu_get_domain_for_dev(parent);
	if (!dp || dp == s[0]->dom || dp == s[1]->dom)
		seq_printf(m, "IOMMUTEST mdev_domain_for_parent FAIL iommu_get_domain_for_dev(parent)=%s%s\n",
			   pt_domain_desc(dp, b2, sizeof(b2)), dp ? " is an mdev's domain" : "");
	else
		seq_printf(m, "IOMMUTEST mdev_domain_for_parent PASS iommu_get_domain_for_dev(parent)=%s: the RID's domain, not an mdev's\n",
			   pt_domain_desc(dp, b2, sizeof(b2)));

	/* DMA through each mdev's PASID; the same IOVAs lead to each domain's own pages. */
	for (i = 0; i < 2; i++) {
		seed[i] = 0x3d3d000000000000ULL | ((u64)s[i]->wq << 32) | (u32)s[i]->pasid;
		why = pt_flow(&pt, s[i]->wq, &s[i]->mm, seed[i]);
		if (why)
			seq_printf(m, "IOMMUTEST mdev_dma_%d FAIL WQ%d PASID %#x: %s\n", i, s[i]->wq, s[i]->pasid, why);
		else if (*(u64 *)s[0]->mm.src != seed[0])
			seq_printf(m, "IOMMUTEST mdev_dma_%d FAIL mdev 0's source page changed to %#llx\n", i,
				   *(u64 *)s[0]->mm.src);
		else
			seq_printf(m, "IOMMUTEST mdev_dma_%d PASS fill/copy/compare 4 KiB on WQ%d through PASID %#x, bytes verified\n",
				   i, s[i]->wq, s[i]->pasid);
	}

	/* Isolation: mdev 1 writes the IOVA only mdev 0's domain maps. */
	memset(s[0]->mm.priv, 0, PAGE_SIZE);
	st = pt_exec(&pt, s[0]->wq, &s[0]->mm, PT_OP_FILL, 8, 0, PT_IOVA_PRIV(s[0]->wq), seed[0], &err);
	if (st != PT_ST_SUCCESS || *(u64 *)s[0]->mm.priv != seed[0]) {
		seq_printf(m, "IOMMUTEST mdev_isolation FAIL mdev 0 cannot write its own IOVA %#lx (status %d error %u)\n",
			   PT_IOVA_PRIV(s[0]->wq), st, err);
	} else {
		w = (struct pt_fault_want){ .wq_err = PT_ERR_TRANSLATION, .reason = pt_np_reason(true, false),
					    .addr = PT_IOVA_PRIV(s[0]->wq), .pasid = s[1]->pasid };
		pt_expect_fault(m, &pt, "mdev_isolation", s[1]->wq, &s[1]->mm, w.addr, &w);
		if (*(u64 *)s[0]->mm.priv != seed[0])
			seq_printf(m, "IOMMUTEST mdev_isolation FAIL mdev 0's page changed to %#llx\n",
				   *(u64 *)s[0]->mm.priv);
	}
	pt_wq_setup(&pt, s[1]->wq, PT_PASID_EN | s[1]->pasid, PT_IOVA_RING);

	/* A write to a page mdev 0's domain maps read-only. */
	w = (struct pt_fault_want){ .wq_err = PT_ERR_TRANSLATION, .reason = pt_ro_reason(),
				    .addr = PT_IOVA_RO, .pasid = s[0]->pasid };
	pt_expect_fault(m, &pt, "pasid_neg_readonly", s[0]->wq, &s[0]->mm, PT_IOVA_RO, &w);

	/* A PASID nothing is attached to, next to the attached ones: its ring read faults. */
	stray = pt_stray_pasid(&pt, s[0]->pasid, s[1]->pasid);
	pt_wq_setup(&pt, PT_WQ_STRAY, PT_PASID_EN | stray, PT_IOVA_RING);
	w = (struct pt_fault_want){ .wq_err = PT_ERR_RING_READ, .reason = VTD_FR_SM_PASID_NP, .read = true,
				    .addr = PT_IOVA_RING, .pasid = stray };
	pt_expect_fault(m, &pt, "pasid_neg_not_attached", PT_WQ_STRAY, &s[0]->mm, PT_IOVA_DST, &w);
	writel(0, pt.bar + PT_WQ(PT_WQ_STRAY, PT_WQ_CTL));

	/* Detach mdev 0's domain: its queue's next DMA faults; mdev 1 keeps working. */
	pt_mdev_detach(s[0]);
	pt_wq_setup(&pt, s[0]->wq, PT_PASID_EN | s[0]->pasid, PT_IOVA_RING);
	w = (struct pt_fault_want){ .wq_err = PT_ERR_RING_READ, .reason = VTD_FR_SM_PASID_NP, .read = true,
				    .addr = PT_IOVA_RING, .pasid = s[0]->pasid };
	pt_expect_fault(m, &pt, "mdev_detach_faults", s[0]->wq, &s[0]->mm, PT_IOVA_DST, &w);
	writel(0, pt.bar + PT_WQ(s[0]->wq, PT_WQ_CTL));
	st = pt_exec(&pt, s[1]->wq, &s[1]->mm, PT_OP_FILL, PAGE_SIZE, 0, PT_IOVA_DST, ~seed[1], &err);
	if (st != PT_ST_SUCCESS || *(u64 *)s[1]->mm.dst != ~seed[1])
		seq_printf(m, "IOMMUTEST mdev_other_after_detach FAIL mdev 1 (PASID %#x): status %d error %u\n",
			   s[1]->pasid, st, err);
	else
		seq_printf(m, "IOMMUTEST mdev_other_after_detach PASS mdev 1 (PASID %#x) still runs after mdev 0's detach\n",
			   s[1]->pasid);
}

static int pt_mdev_report_show(struct seq_file *m, void *unused)
{
	mutex_lock(&pt_lock);
	pt_mdev_tests(m);
	mutex_unlock(&pt_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pt_mdev_report);
#endif /* PT_MDEV */

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 12, 0)
/* 6.1: an unmanaged domain attached at RID level. */
static void pt_test_pasid_attach(struct seq_file *m, struct pt_dev *p)
{
	struct device *dev = &p->pdev->dev;
	struct iommu_domain *dom;
	struct page *pages[PT_PAGES] = { NULL };
	struct pt_fault_want w;
	struct pt_mem mm;
	const char *why;
	int ret, stray = pt_stray_pasid(p, -1, -1);

	dom = iommu_domain_alloc(&pci_bus_type);
	if (!dom) {
		seq_printf(m, "IOMMUTEST unmanaged_attach FAIL iommu_domain_alloc\n");
		return;
	}
	if (pt_mem_alloc(&mm, pages) || pt_map(dom, pages, 1)) {
		seq_printf(m, "IOMMUTEST unmanaged_attach FAIL allocating or mapping test pages\n");
		goto out;
	}
	ret = iommu_attach_device(dom, dev);
	if (ret) {
		seq_printf(m, "IOMMUTEST unmanaged_attach FAIL iommu_attach_device: %d\n", ret);
		goto out;
	}
	seq_printf(m, "IOMMUTEST unmanaged_attach PASS RID-level unmanaged domain\n");
	pt_wq_setup(p, 1, 0, PT_IOVA_RING);
	why = pt_flow(p, 1, &mm, 0x6101610161016101ULL);
	if (why)
		seq_printf(m, "IOMMUTEST unmanaged_dma FAIL %s\n", why);
	else
		seq_printf(m, "IOMMUTEST unmanaged_dma PASS fill/copy/compare through iommu_map'ed IOVAs\n");
	w = (struct pt_fault_want){ .wq_err = PT_ERR_TRANSLATION, .reason = pt_ro_reason(),
				    .addr = PT_IOVA_RO, .pasid = -1 };
	pt_expect_fault(m, p, "pasid_neg_readonly", 1, &mm, PT_IOVA_RO, &w);
	pt_wq_setup(p, PT_WQ_STRAY, PT_PASID_EN | stray, PT_IOVA_RING);
	w = (struct pt_fault_want){ .wq_err = PT_ERR_RING_READ, .reason = VTD_FR_SM_PASID_NP, .read = true,
				    .addr = PT_IOVA_RING, .pasid = stray };
	pt_expect_fault(m, p, "pasid_neg_not_attached", PT_WQ_STRAY, &mm, PT_IOVA_DST, &w);
	writel(0, p->bar + PT_WQ(1, PT_WQ_CTL));
	writel(0, p->bar + PT_WQ(PT_WQ_STRAY, PT_WQ_CTL));
	iommu_detach_device(dom, dev);
out:
	iommu_domain_free(dom);
	pt_mem_free(pages);
	/* Shared virtual addressing through the driver's sva_bind (sva.c). */
	iommutest_sva_kernel(m, p->pdev, p->bar);
}
#endif

/*
 * Why shared virtual addressing cannot run on the PASID test device with this IOMMU, from
 * its capabilities, or NULL (then any failure is a FAIL). Intel's SVA (6.1) binds an mm with
 * first-level tables to a PASID and serves the device's page requests: scalable mode,
 * ECAP.PASID, ECAP.FLTS, ECAP.PRS and the device-TLB (ATS, ECAP.DT).
 */
const char *iommutest_sva_missing(void)
{
	const char *why;

	if (!pt.pdev)
		return "no PASID test device";
	if (no_iommu_reason(&pt.pdev->dev))
		return "needs an IOMMU (no ACPI DMAR table): --iommu intel-iommu,x-scalable-mode=on,device-iotlb=on,x-prs=on";
	why = pt_no_pasid_reason(&pt);
	if (why)
		return why;
	if (!(pt.ecap & ECAP_FLTS))
		return "needs first-level translation, which Intel's SVA binds (ECAP.FLTS=0): --iommu ...,x-flts=on";
	if (!(pt.ecap & ECAP_PRS) || !(pt.ecap & ECAP_DT))
		return "needs ECAP.PRS and ATS (ECAP.DT): --iommu ...,device-iotlb=on,x-prs=on";
	return NULL;
}

/* At load: all MSI-X vectors, handlers on the WQ 0 completion and the error vector. */
static void pt_msix_setup(struct pci_dev *pdev)
{
	int ret = pci_alloc_irq_vectors(pdev, PT_NUM_VECTORS, PT_NUM_VECTORS, PCI_IRQ_MSIX);

	if (ret < 0) {
		pt.msix_ret = ret;
		return;
	}
	pt.irq_wq0 = pci_irq_vector(pdev, 0);
	pt.irq_err = pci_irq_vector(pdev, PT_VEC_ERROR);
	ret = request_irq(pt.irq_wq0, pt_irq_wq0, 0, "iommutest-wq0", &pt);
	if (ret)
		goto free_vectors;
	ret = request_irq(pt.irq_err, pt_irq_err, 0, "iommutest-err", &pt);
	if (ret) {
		free_irq(pt.irq_wq0, &pt);
		goto free_vectors;
	}
	pt.msix_ret = 0;
	return;
free_vectors:
	pci_free_irq_vectors(pdev);
	pt.msix_ret = ret;
}

/* At load: find the device, enable it, map BAR0, register the mdev parent. */
static void pt_probe(void)
{
	struct pci_dev *pdev = pci_get_device(PT_VENDOR, PT_DEVICE, NULL);
	void __iomem *regs;

	if (!pdev)
		return;
	pt.pdev = pdev;
	if (dmar_base) {
		regs = ioremap(dmar_base, PAGE_SIZE);
		if (regs) {
			pt.ecap = readq(regs + DMAR_ECAP_REG);
			pt.first_level = pt.ecap & ECAP_FLTS;
			pt.scalable = ((readq(regs + DMAR_RTADDR_REG) >> RTADDR_TTM_SHIFT) & 3) == 1;
			iounmap(regs);
		}
	}
	pt.setup_err = pci_enable_device_mem(pdev);
	if (pt.setup_err)
		return;
	pci_set_master(pdev);
	pt.bar = pci_iomap(pdev, 0, 0);
	if (!pt.bar) {
		pt.setup_err = -ENOMEM;
		pci_clear_master(pdev);
		pci_disable_device(pdev);
		return;
	}
	writel(2, pt.bar + PT_GCTL);
	writel(1, pt.bar + PT_GCTL);
	pt_msix_setup(pdev);
	if (dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64)))
		dev_warn(&pdev->dev, "iommutest: dma_set_mask failed\n");
#ifdef PT_MDEV
	if (pt_no_pasid_reason(&pt))
		return;
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
	pt.aux_ret = iommu_dev_enable_feature(&pdev->dev, IOMMU_DEV_FEAT_AUX);
	if (pt.aux_ret)
		return;
#endif
	pt.mdev_ret = pt_mdev_register();
	if (!pt.mdev_ret)
		pt_mdev_file = debugfs_create_file("mdev", 0444, iommutest_dir, NULL, &pt_mdev_report_fops);
#endif
}

static void pt_remove(void)
{
	if (!pt.pdev)
		return;
#ifdef PT_MDEV
	if (!pt.mdev_ret)
		pt_mdev_unregister();
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
	if (!pt.aux_ret)
		iommu_dev_disable_feature(&pt.pdev->dev, IOMMU_DEV_FEAT_AUX);
#endif
#endif
	if (pt.bar) {
		writel(2, pt.bar + PT_GCTL);
		if (!pt.msix_ret) {
			free_irq(pt.irq_err, &pt);
			free_irq(pt.irq_wq0, &pt);
			pci_free_irq_vectors(pt.pdev);
		}
		pci_iounmap(pt.pdev, pt.bar);
		pci_clear_master(pt.pdev);
		pci_disable_device(pt.pdev);
	}
	pci_dev_put(pt.pdev);
}

static void test_pasid_device(struct seq_file *m)
{
	struct pci_dev *pdev = pt.pdev;
	struct iommu_group *grp;
	int pasid_cap, ats_cap, pri_cap, eetlp;

	/* No line at all without the device: image tests on other VMMs expect skip=0. */
	if (!pdev)
		return;
	pasid_cap = pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_PASID);
	ats_cap = pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_ATS);
	pri_cap = pci_find_ext_capability(pdev, PCI_EXT_CAP_ID_PRI);
	/* 6.14 replaced the End-End TLP prefix bit by the number of prefixes supported. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	eetlp = pdev->eetlp_prefix_max;
#else
	eetlp = pdev->eetlp_prefix_path;
#endif
	if (pasid_cap && ats_cap && pri_cap)
		seq_printf(m, "IOMMUTEST pasid_dev_present PASS %s PASID@%#x ATS@%#x PRI@%#x max_pasids=%d pasid_enabled=%d eetlp=%d\n",
			   pci_name(pdev), pasid_cap, ats_cap, pri_cap, pci_max_pasids(pdev),
			   pdev->pasid_enabled, eetlp);
	else
		seq_printf(m, "IOMMUTEST pasid_dev_present FAIL %s PASID@%#x ATS@%#x PRI@%#x\n", pci_name(pdev),
			   pasid_cap, ats_cap, pri_cap);
	grp = iommu_group_get(&pdev->dev);
	if (grp) {
		seq_printf(m, "IOMMUTEST pasid_dev_group PASS group=%d\n", iommu_group_id(grp));
		iommu_group_put(grp);
	} else if (no_iommu_reason(&pdev->dev)) {
		seq_printf(m, "IOMMUTEST pasid_dev_group SKIP %s\n", no_iommu_reason(&pdev->dev));
	} else {
		seq_printf(m, "IOMMUTEST pasid_dev_group FAIL no IOMMU group\n");
	}
	if (pt.setup_err) {
		seq_printf(m, "IOMMUTEST pasid_dev_dma_api FAIL enabling the function or mapping BAR0: %d\n",
			   pt.setup_err);
		return;
	}
	mutex_lock(&pt_lock);
	pt_test_dma_api(m, &pt);
	mutex_unlock(&pt_lock);
	/*
	 * A PASID attached from user space through iommufd (IOMMU_HWPT_ALLOC, then a PASID
	 * attach of the device bound to vfio-pci) needs CONFIG_IOMMUFD, which none of Debian's
	 * kernels (5.10 to 7.3) sets; the payload has no iommufd path yet to run where it is set.
	 */
#if IS_ENABLED(CONFIG_IOMMUFD)
	seq_printf(m, "IOMMUTEST iommufd_pasid SKIP the kernel has CONFIG_IOMMUFD, but the payload's iommufd PASID test is not written yet\n");
#else
	seq_printf(m, "IOMMUTEST iommufd_pasid SKIP kernel has no CONFIG_IOMMUFD\n");
#endif
	if (pt_no_pasid_reason(&pt)) {
		seq_printf(m, "IOMMUTEST pasid_flows SKIP %s\n", pt_no_pasid_reason(&pt));
		return;
	}
#ifdef PT_MDEV
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
	/* 5.10 enables PASID on the function when the aux feature is turned on. */
	if (pt.aux_ret) {
		seq_printf(m, "IOMMUTEST aux_enable FAIL iommu_dev_enable_feature(AUX): %d\n", pt.aux_ret);
		return;
	}
	seq_printf(m, "IOMMUTEST aux_enable PASS IOMMU_DEV_FEAT_AUX on %s (pasid_enabled=%d)\n", pci_name(pdev),
		   pdev->pasid_enabled);
	if (pt.mdev_ret)
		seq_printf(m, "IOMMUTEST mdev_parent FAIL mdev_register_device: %d\n", pt.mdev_ret);
	else
		seq_printf(m, "IOMMUTEST mdev_parent PASS mdev_register_device(%s), type iommutest_wq, %d instances\n",
			   pci_name(pdev), PT_MDEV_MAX);
#else
	if (!pdev->pasid_enabled)
		seq_printf(m, "IOMMUTEST mdev_parent FAIL the kernel did not enable PASID on %s\n", pci_name(pdev));
	else if (pt.mdev_ret)
		seq_printf(m, "IOMMUTEST mdev_parent FAIL mdev_register_parent: %d\n", pt.mdev_ret);
	else
		seq_printf(m, "IOMMUTEST mdev_parent PASS mdev_register_parent(%s), type iommutest_wq, %d instances\n",
			   pci_name(pdev), PT_MDEV_MAX);
#endif
#else
	if (!pdev->pasid_enabled) {
		seq_printf(m, "IOMMUTEST unmanaged_attach FAIL the kernel did not enable PASID on %s\n", pci_name(pdev));
		return;
	}
	mutex_lock(&pt_lock);
	pt_test_pasid_attach(m, &pt);
	mutex_unlock(&pt_lock);
#endif
}

static int report_show(struct seq_file *m, void *unused)
{
	struct pci_dev *pdev = find_virtio_blk();

	/* Which generation of the IOMMU API this kernel offers (issue 8 builds on it). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	seq_printf(m, "IOMMUTEST kmod_api PASS pasid-attach (iommu_attach_device_pasid)\n");
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
	seq_printf(m, "IOMMUTEST kmod_api PASS sva (iommu_sva_bind_device)\n");
#else
	seq_printf(m, "IOMMUTEST kmod_api PASS aux-domain (iommu_aux_attach_device)\n");
#endif
	test_dmar_registers(m);
	test_pasid_device(m);
	if (!pdev) {
		seq_printf(m, "IOMMUTEST kmod_dev_iommu_mapped SKIP no virtio-blk PCI device\n");
		seq_printf(m, "IOMMUTEST kmod_iommu_group SKIP no virtio-blk PCI device\n");
		seq_printf(m, "IOMMUTEST kmod_default_domain SKIP no virtio-blk PCI device\n");
		seq_printf(m, "IOMMUTEST kmod_dma_map SKIP no virtio-blk PCI device\n");
		return 0;
	}
	test_device(m, pdev);
	pci_dev_put(pdev);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(report);

static int __init iommutest_init(void)
{
	iommutest_dir = debugfs_create_dir("iommutest", NULL);
	debugfs_create_file("report", 0444, iommutest_dir, NULL, &report_fops);
	iommutest_sva_init(iommutest_dir);
	pt_probe();
	return 0;
}

static void __exit iommutest_exit(void)
{
	debugfs_remove_recursive(iommutest_dir);
	iommutest_sva_exit();
	pt_remove();
}

module_init(iommutest_init);
module_exit(iommutest_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iommu-emulator guest test payload");
