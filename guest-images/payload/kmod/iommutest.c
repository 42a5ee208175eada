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

#define IOMMUTEST_EXIT_PORT 0xf4

/* VT-d register offsets and fields (Intel VT-d Architecture Specification, chapter 11). */
#define DMAR_ECAP_REG 0x10		/* 11.4.3 Extended Capability Register */
#define DMAR_GSTS_REG 0x1c		/* 11.4.5 Global Status Register */
#define DMAR_RTADDR_REG 0x20		/* 11.4.6 Root Table Address Register */
#define ECAP_SMTS (1ULL << 43)		/* Scalable Mode Translation Support */
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
		seq_printf(m, "IOMMUTEST kmod_translation_enabled SKIP no Intel IOMMU (dmar) unit\n");
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP no Intel IOMMU (dmar) unit\n");
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
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP hardware has no scalable mode (ECAP.SMTS=0, ecap=%#llx)\n",
			   ecap);
	else if (ttm == 1)
		seq_printf(m, "IOMMUTEST kmod_scalable_mode PASS RTADDR.TTM=01 (scalable), ecap=%#llx\n", ecap);
	else if (sm_asked)
		seq_printf(m, "IOMMUTEST kmod_scalable_mode FAIL scalable mode asked and ECAP.SMTS=1, but RTADDR.TTM=%u\n",
			   ttm);
	else
		seq_printf(m, "IOMMUTEST kmod_scalable_mode SKIP scalable mode not asked (RTADDR.TTM=%u)\n", ttm);
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
	return 0;
}

static void __exit iommutest_exit(void)
{
	debugfs_remove_recursive(iommutest_dir);
}

module_init(iommutest_init);
module_exit(iommutest_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iommu-emulator guest test payload");
