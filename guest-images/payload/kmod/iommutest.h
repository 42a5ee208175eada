/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * iommutest: what the module's source files share.
 *
 * sva.c holds the shared-virtual-addressing tests (6.1) and the interfaces the static test
 * programs use from user space:
 *   /sys/kernel/debug/iommutest/sva       ioctl IOMMUTEST_SVA_RUN: bind the caller's mm to the
 *                                         PASID test device and run its descriptor ring
 *   /sys/kernel/debug/iommutest/dma_loop  write N: N fill+copy+compare rounds of 4 KiB through
 *                                         the DMA API on the PASID test device (a known DMA
 *                                         workload for the perf counter test)
 */
#ifndef IOMMUTEST_H
#define IOMMUTEST_H

#include <linux/types.h>

struct seq_file;
struct pci_dev;
struct dentry;

/* Creates sva.c's debugfs files in dir (module init). */
void iommutest_sva_init(struct dentry *dir);
/* Undoes what the SVA tests left enabled (module exit). */
void iommutest_sva_exit(void);
/*
 * 6.1: the supervisor-PASID test over kernel buffers (line sva_bind_supervisor), with the
 * device enabled and its BAR0 mapped at bar. Other kernels: no line.
 */
void iommutest_sva_kernel(struct seq_file *m, struct pci_dev *pdev, void __iomem *bar);
/*
 * iommutest.c: why SVA cannot run on the PASID test device with this IOMMU (a SKIP reason
 * naming the property that enables it), from the unit's capabilities; NULL when it can.
 */
const char *iommutest_sva_missing(void);

#endif
