// SPDX-License-Identifier: GPL-2.0-only
/*
 * iommutest: shared virtual addressing (SVA) on the PASID test device, and a DMA workload for
 * the IOMMU perf counter test.
 *
 * Debian's 6.1 makes the exported iommu_sva_bind_device() return -EOPNOTSUPP on x86 (a stable
 * security backport: the IOMMU may cache kernel page-table pages that x86 frees without an
 * IOTLB flush). 6.1 still has the driver-level operation behind it: struct iommu_ops has
 * sva_bind(dev, mm, drvdata), sva_unbind and sva_get_pasid, and Intel's implementation takes
 * SVM_FLAG_SUPERVISOR_MODE (linux/intel-svm.h) through drvdata to bind init_mm to a
 * supervisor PASID (its entry gets SRE). iommu_sva_bind_device() itself only adds a check
 * that the group has one device (ours does) around the same call, so this module calls
 * dev_iommu_ops(dev)->sva_bind directly. This is a test payload in a throw-away guest; real
 * drivers must not do this.
 *
 * Device memory layout and registers: vmm/docs/pasid-device.md. Every wait is bounded.
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/iommu.h>
#include <linux/dma-mapping.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/delay.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/version.h>
#include <linux/err.h>
#include <linux/io.h>
#include <linux/mutex.h>
#include <linux/fs.h>

#include "iommutest.h"
#include "iommutest_uapi.h"

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
/* 6.1: iommu_ops still has sva_bind/sva_unbind/sva_get_pasid (6.2 moved SVA to domains). */
#define SVA_OPS 1
#include <linux/intel-svm.h>
#endif

#define SVA_PT_VENDOR 0x1af4
#define SVA_PT_DEVICE 0x10f7
#define SVA_GCTL 0x0c
#define SVA_GSTS 0x10
#define SVA_ERR_STATUS 0x14
#define SVA_PAGE_REQUESTS 0x1c
#define SVA_PAGE_RESPONSES 0x20
#define SVA_WQ(n, r) (0x1000 + (n) * 0x100 + (r))
#define SVA_WQ_PASID 0x00
#define SVA_WQ_RING_BASE 0x08
#define SVA_WQ_RING_SIZE 0x10
#define SVA_WQ_HEAD 0x14
#define SVA_WQ_TAIL 0x18
#define SVA_WQ_CTL 0x1c
#define SVA_WQ_STATUS 0x20
#define SVA_WQ_ERROR 0x24
#define SVA_WQ_FAULT_ADDR 0x28
#define SVA_WQ_COMPLETED 0x30
#define SVA_PASID_EN (1U << 31)
#define SVA_PASID_PRIV (1U << 30)
#define SVA_CTL_ENABLE 1U
#define SVA_CTL_USE_PRI 2U
#define SVA_ST_ERROR 2U
#define SVA_ST_WAITING 4U

/* Work queues of this file (iommutest.c uses the others). */
#define SVA_WQ_KERNEL 5
#define SVA_WQ_USER 6
#define SVA_WQ_WORKLOAD 5

#define SVA_TIMEOUT_US (10 * USEC_PER_SEC)

/* One user of the device at a time (the module's report, the ioctl, the workload). */
static DEFINE_MUTEX(sva_lock);

struct sva_wait {
	u32 head, status, error, completed;
	u64 fault_addr;
	bool timed_out;
};

static void sva_wq_setup(void __iomem *bar, int n, u32 pasid_reg, u64 ring, u32 size, u32 ctl)
{
	writel(0, bar + SVA_WQ(n, SVA_WQ_CTL));
	writel(pasid_reg, bar + SVA_WQ(n, SVA_WQ_PASID));
	writel(lower_32_bits(ring), bar + SVA_WQ(n, SVA_WQ_RING_BASE));
	writel(upper_32_bits(ring), bar + SVA_WQ(n, SVA_WQ_RING_BASE) + 4);
	writel(size, bar + SVA_WQ(n, SVA_WQ_RING_SIZE));
	writel(ctl, bar + SVA_WQ(n, SVA_WQ_CTL));
}

/*
 * Rings the doorbell with tail and waits until the queue's HEAD reaches it without a page
 * request outstanding, or the queue stops with an error, or 10 s pass. Sleeps between polls:
 * page requests are served by the IOMMU driver's threaded interrupt and the IOPF workqueue,
 * and the device takes the page group response at its next register access (these reads).
 */
static void sva_ring(void __iomem *bar, int n, u32 tail, struct sva_wait *w)
{
	ktime_t end = ktime_add_us(ktime_get(), SVA_TIMEOUT_US);

	writel(tail, bar + SVA_WQ(n, SVA_WQ_TAIL));
	w->timed_out = false;
	for (;;) {
		w->status = readl(bar + SVA_WQ(n, SVA_WQ_STATUS));
		w->head = readl(bar + SVA_WQ(n, SVA_WQ_HEAD));
		if (w->status & SVA_ST_ERROR)
			break;
		if (w->head == tail && !(w->status & SVA_ST_WAITING))
			break;
		if (ktime_after(ktime_get(), end)) {
			w->timed_out = true;
			break;
		}
		usleep_range(100, 300);
	}
	w->error = readl(bar + SVA_WQ(n, SVA_WQ_ERROR));
	w->completed = readl(bar + SVA_WQ(n, SVA_WQ_COMPLETED));
	w->fault_addr = readq(bar + SVA_WQ(n, SVA_WQ_FAULT_ADDR));
}

static void sva_desc(struct iommutest_desc *d, u8 op, u32 len, u64 src, u64 dst, u64 pattern,
		     u64 cpl)
{
	memset(d, 0, sizeof(*d));
	d->op = op;
	d->len = len;
	d->src = src;
	d->dst = dst;
	d->pattern = pattern;
	d->cpl = cpl;
}

/* The device enabled for DMA with BAR0 mapped (another reference); undone by sva_dev_put. */
struct sva_dev {
	struct pci_dev *pdev;
	void __iomem *bar;
};

static int sva_dev_get(struct sva_dev *s)
{
	int ret;

	s->pdev = pci_get_device(SVA_PT_VENDOR, SVA_PT_DEVICE, NULL);
	if (!s->pdev)
		return -ENODEV;
	ret = pci_enable_device_mem(s->pdev);
	if (ret)
		goto put;
	pci_set_master(s->pdev);
	s->bar = pci_iomap(s->pdev, 0, 0);
	if (!s->bar) {
		ret = -ENOMEM;
		goto disable;
	}
	if (!(readl(s->bar + SVA_GSTS) & 1))
		writel(1, s->bar + SVA_GCTL);
	return 0;
disable:
	pci_clear_master(s->pdev);
	pci_disable_device(s->pdev);
put:
	pci_dev_put(s->pdev);
	return ret;
}

/*
 * iommutest.c keeps the device enabled while the module is loaded; enabling is counted, so
 * this only drops our reference (bus mastering goes with the last one).
 */
static void sva_dev_put(struct sva_dev *s)
{
	pci_iounmap(s->pdev, s->bar);
	pci_disable_device(s->pdev);
	pci_dev_put(s->pdev);
}

#ifdef SVA_OPS
/* The device whose IOPF and SVA features this module turned on (turned off at exit). */
static struct pci_dev *sva_feat_dev;

/*
 * IOMMU_DEV_FEAT_IOPF then IOMMU_DEV_FEAT_SVA (the order the feature comments in iommu.h
 * ask for). Intel 6.1 grants IOPF when the function has PRI (ECAP.PRS, ATS, PRI capability)
 * and SVA when PASID, PRI and ATS are enabled on it and the unit is SVM-capable; SVA
 * registers the driver's IOPF handler for the device's page requests.
 */
static int sva_features_on(struct pci_dev *pdev)
{
	int ret;

	if (sva_feat_dev)
		return 0;
	ret = iommu_dev_enable_feature(&pdev->dev, IOMMU_DEV_FEAT_IOPF);
	if (ret) {
		pr_err("iommutest: IOMMU_DEV_FEAT_IOPF: %d\n", ret);
		return ret;
	}
	ret = iommu_dev_enable_feature(&pdev->dev, IOMMU_DEV_FEAT_SVA);
	if (ret) {
		pr_err("iommutest: IOMMU_DEV_FEAT_SVA: %d\n", ret);
		iommu_dev_disable_feature(&pdev->dev, IOMMU_DEV_FEAT_IOPF);
		return ret;
	}
	sva_feat_dev = pci_dev_get(pdev);
	return 0;
}

static void sva_features_off(void)
{
	if (!sva_feat_dev)
		return;
	iommu_dev_disable_feature(&sva_feat_dev->dev, IOMMU_DEV_FEAT_SVA);
	iommu_dev_disable_feature(&sva_feat_dev->dev, IOMMU_DEV_FEAT_IOPF);
	pci_dev_put(sva_feat_dev);
	sva_feat_dev = NULL;
}

/*
 * Supervisor PASID over kernel buffers: init_mm bound through sva_bind with
 * SVM_FLAG_SUPERVISOR_MODE; a queue with PASID_EN|PRIV runs fill, copy and compare on pages of
 * the kernel's direct map, addressed by their kernel virtual addresses. Then the same PASID
 * without PRIV (a user-mode request) must fault on those supervisor pages.
 */
static void sva_kernel_test(struct seq_file *m, struct pci_dev *pdev, void __iomem *bar)
{
	const struct iommu_ops *ops;
	unsigned int flags = SVM_FLAG_SUPERVISOR_MODE;
	struct iommutest_desc *ring;
	struct iommutest_cpl *cpl;
	struct iommu_sva *h;
	struct sva_wait w;
	u8 *src, *dst;
	u64 pattern = 0x5e5e0000c0de0000ULL;
	u32 pasid, es;
	int ret, i;
	const char *why = iommutest_sva_missing();

	if (why) {
		seq_printf(m, "IOMMUTEST sva_bind_supervisor SKIP %s\n", why);
		return;
	}
	if (!device_iommu_mapped(&pdev->dev)) {
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL %s is not behind an IOMMU\n", pci_name(pdev));
		return;
	}
	ops = dev_iommu_ops(&pdev->dev);
	if (!ops->sva_bind || !ops->sva_unbind || !ops->sva_get_pasid) {
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL the IOMMU driver has no sva_bind operation\n");
		return;
	}
	ret = sva_features_on(pdev);
	if (ret) {
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL enabling IOMMU_DEV_FEAT_IOPF/SVA: %d, though the unit has PASID, FLTS, PRS and device-TLB\n",
			   ret);
		return;
	}
	ring = (void *)__get_free_page(GFP_KERNEL | __GFP_ZERO);
	cpl = (void *)__get_free_page(GFP_KERNEL | __GFP_ZERO);
	src = (void *)__get_free_page(GFP_KERNEL | __GFP_ZERO);
	dst = (void *)__get_free_page(GFP_KERNEL | __GFP_ZERO);
	if (!ring || !cpl || !src || !dst) {
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL no memory\n");
		goto free;
	}
	h = ops->sva_bind(&pdev->dev, NULL, &flags);
	if (IS_ERR_OR_NULL(h)) {
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL sva_bind(init_mm, SVM_FLAG_SUPERVISOR_MODE): %ld\n",
			   h ? PTR_ERR(h) : 0L);
		goto free;
	}
	pasid = ops->sva_get_pasid(h);
	sva_desc(&ring[0], IOMMUTEST_OP_FILL, PAGE_SIZE, 0, (u64)src, pattern, (u64)&cpl[0]);
	sva_desc(&ring[1], IOMMUTEST_OP_COPY, PAGE_SIZE, (u64)src, (u64)dst, 0, (u64)&cpl[1]);
	sva_desc(&ring[2], IOMMUTEST_OP_COMPARE, PAGE_SIZE, (u64)src, (u64)dst, 0, (u64)&cpl[2]);
	wmb();
	sva_wq_setup(bar, SVA_WQ_KERNEL, SVA_PASID_EN | SVA_PASID_PRIV | pasid, (u64)ring, 4,
		     SVA_CTL_ENABLE);
	sva_ring(bar, SVA_WQ_KERNEL, 3, &w);
	rmb();
	for (i = 0; i < 3; i++)
		if (READ_ONCE(cpl[i].status) != IOMMUTEST_ST_SUCCESS)
			break;
	if (w.timed_out || i < 3)
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL PASID %#x: descriptor %d status %u, WQ status %#x error %u fault %#llx%s\n",
			   pasid, i, i < 3 ? cpl[i].status : 0, w.status, w.error, w.fault_addr,
			   w.timed_out ? " (timed out after 10 s)" : "");
	else if (*(u64 *)src != pattern || *(u64 *)(src + PAGE_SIZE - 8) != pattern ||
		 memcmp(src, dst, PAGE_SIZE))
		seq_printf(m, "IOMMUTEST sva_bind_supervisor FAIL PASID %#x: bytes in memory are wrong\n", pasid);
	else
		seq_printf(m, "IOMMUTEST sva_bind_supervisor PASS supervisor PASID %#x (init_mm): fill/copy/compare 4 KiB at kernel VAs %px -> %px\n",
			   pasid, src, dst);

	/* The same PASID, user-mode requests: kernel pages are supervisor pages (U/S=0). */
	memset(cpl, 0, PAGE_SIZE);
	sva_desc(&ring[0], IOMMUTEST_OP_FILL, 8, 0, (u64)dst, 0x77, 0);
	wmb();
	sva_wq_setup(bar, SVA_WQ_KERNEL, SVA_PASID_EN | pasid, (u64)ring, 4, SVA_CTL_ENABLE);
	sva_ring(bar, SVA_WQ_KERNEL, 1, &w);
	es = readl(bar + SVA_ERR_STATUS);
	if ((w.status & SVA_ST_ERROR) && (es & BIT(SVA_WQ_KERNEL)))
		seq_printf(m, "IOMMUTEST sva_supervisor_user_request_faults PASS user-mode request on PASID %#x stopped: error=%u fault_addr=%#llx\n",
			   pasid, w.error, w.fault_addr);
	else
		seq_printf(m, "IOMMUTEST sva_supervisor_user_request_faults FAIL user-mode request on PASID %#x: WQ status %#x error %u err_status %#x\n",
			   pasid, w.status, w.error, es);
	writel(BIT(SVA_WQ_KERNEL), bar + SVA_ERR_STATUS);
	writel(0, bar + SVA_WQ(SVA_WQ_KERNEL, SVA_WQ_CTL));
	ops->sva_unbind(h);
free:
	free_page((unsigned long)ring);
	free_page((unsigned long)cpl);
	free_page((unsigned long)src);
	free_page((unsigned long)dst);
}

/* IOMMUTEST_SVA_RUN: the caller's mm bound at a PASID, its ring run with page requests. */
static long sva_user_run(struct iommutest_sva_run *r)
{
	const struct iommu_ops *ops;
	struct iommu_sva *h;
	struct sva_dev s;
	struct sva_wait w;
	ktime_t t0;
	u32 pr0, rs0;
	int ret;

	if (!r->ring_size || r->ring_size > 4096 || (r->ring_size & (r->ring_size - 1)) ||
	    r->ring_size < 2 || !r->count || r->count >= r->ring_size || (r->ring & 63))
		return -EINVAL;
	if (iommutest_sva_missing())
		return -EOPNOTSUPP; /* the program reads the reason from debugfs/iommutest/sva_skip */
	ret = sva_dev_get(&s);
	if (ret)
		return ret;
	if (!device_iommu_mapped(&s.pdev->dev)) {
		ret = -ENXIO;
		goto put;
	}
	ops = dev_iommu_ops(&s.pdev->dev);
	if (!ops->sva_bind || !ops->sva_unbind || !ops->sva_get_pasid) {
		ret = -EOPNOTSUPP;
		goto put;
	}
	ret = sva_features_on(s.pdev);
	if (ret)
		goto put;
	h = ops->sva_bind(&s.pdev->dev, current->mm, NULL);
	if (IS_ERR_OR_NULL(h)) {
		ret = h ? PTR_ERR(h) : -ENODEV;
		pr_err("iommutest: sva_bind(current->mm): %d\n", ret);
		goto put;
	}
	r->pasid = ops->sva_get_pasid(h);
	pr0 = readl(s.bar + SVA_PAGE_REQUESTS);
	rs0 = readl(s.bar + SVA_PAGE_RESPONSES);
	t0 = ktime_get();
	sva_wq_setup(s.bar, SVA_WQ_USER, SVA_PASID_EN | r->pasid, r->ring, r->ring_size,
		     SVA_CTL_ENABLE | SVA_CTL_USE_PRI);
	sva_ring(s.bar, SVA_WQ_USER, r->count, &w);
	r->usecs = ktime_us_delta(ktime_get(), t0);
	r->head = w.head;
	r->status = w.status;
	r->error = w.error;
	r->fault_addr = w.fault_addr;
	r->completed = w.completed;
	r->timed_out = w.timed_out;
	r->page_requests = readl(s.bar + SVA_PAGE_REQUESTS) - pr0;
	r->page_responses = readl(s.bar + SVA_PAGE_RESPONSES) - rs0;
	writel(0, s.bar + SVA_WQ(SVA_WQ_USER, SVA_WQ_CTL));
	writel(BIT(SVA_WQ_USER), s.bar + SVA_ERR_STATUS);
	/* Unbind tears the PASID entry down and drains page requests (VT-d 7.10). */
	ops->sva_unbind(h);
	sva_wq_setup(s.bar, SVA_WQ_USER, SVA_PASID_EN | r->pasid, r->ring, r->ring_size,
		     SVA_CTL_ENABLE);
	sva_ring(s.bar, SVA_WQ_USER, 1, &w);
	r->unbind_status = w.status;
	r->unbind_error = w.error;
	writel(0, s.bar + SVA_WQ(SVA_WQ_USER, SVA_WQ_CTL));
	writel(BIT(SVA_WQ_USER), s.bar + SVA_ERR_STATUS);
	ret = 0;
put:
	sva_dev_put(&s);
	return ret;
}

static long sva_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct iommutest_sva_run r;
	long ret;

	if (cmd != IOMMUTEST_SVA_RUN)
		return -ENOTTY;
	if (copy_from_user(&r, (void __user *)arg, sizeof(r)))
		return -EFAULT;
	mutex_lock(&sva_lock);
	ret = sva_user_run(&r);
	mutex_unlock(&sva_lock);
	if (!ret && copy_to_user((void __user *)arg, &r, sizeof(r)))
		ret = -EFAULT;
	return ret;
}

static const struct file_operations sva_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = sva_ioctl,
};

/* debugfs/iommutest/sva_skip: why SVA cannot run here (one line), empty when it can. */
static int sva_skip_show(struct seq_file *m, void *unused)
{
	const char *why = iommutest_sva_missing();

	if (why)
		seq_printf(m, "%s\n", why);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(sva_skip);
#endif /* SVA_OPS */

void iommutest_sva_kernel(struct seq_file *m, struct pci_dev *pdev, void __iomem *bar)
{
#ifdef SVA_OPS
	mutex_lock(&sva_lock);
	sva_kernel_test(m, pdev, bar);
	mutex_unlock(&sva_lock);
#endif
}

/*
 * dma_loop: N rounds, each on two fresh pages mapped with the DMA API (new IOVAs, so IOTLB
 * misses and page walks), of fill, copy and compare on work queue 5 (no PASID). Per round the
 * device makes 11 translated accesses: 3 ring reads, 3 completion writes, and the fill's
 * destination, the copy's source and destination, the compare's source and destination
 * (4 KiB each, one translation per page). Fails with -EIO on any wrong status or byte.
 */
static int sva_dma_loop(unsigned int n)
{
	struct iommutest_desc *ring;
	struct iommutest_cpl *cpl;
	dma_addr_t ring_iova, cpl_iova;
	struct device *dev;
	struct sva_dev s;
	struct sva_wait w = { 0 };
	u32 tail = 0;
	unsigned int i;
	int ret, k;

	ret = sva_dev_get(&s);
	if (ret)
		return ret;
	dev = &s.pdev->dev;
	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(64));
	if (ret)
		goto put;
	ring = dma_alloc_coherent(dev, PAGE_SIZE, &ring_iova, GFP_KERNEL);
	cpl = dma_alloc_coherent(dev, PAGE_SIZE, &cpl_iova, GFP_KERNEL);
	if (!ring || !cpl) {
		ret = -ENOMEM;
		goto free;
	}
	sva_wq_setup(s.bar, SVA_WQ_WORKLOAD, 0, ring_iova, PAGE_SIZE / sizeof(*ring), SVA_CTL_ENABLE);
	for (i = 0; i < n && !ret; i++) {
		struct page *ps = alloc_page(GFP_KERNEL | __GFP_ZERO);
		struct page *pd = alloc_page(GFP_KERNEL | __GFP_ZERO);
		dma_addr_t a = DMA_MAPPING_ERROR, b = DMA_MAPPING_ERROR;
		u64 pattern = 0xd0d0000000000000ULL | i;
		u32 mask = PAGE_SIZE / sizeof(*ring) - 1;

		if (!ps || !pd) {
			ret = -ENOMEM;
			goto round_done;
		}
		a = dma_map_page(dev, ps, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		b = dma_map_page(dev, pd, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (dma_mapping_error(dev, a) || dma_mapping_error(dev, b)) {
			ret = -ENOMEM;
			goto round_done;
		}
		memset(cpl, 0, 3 * sizeof(*cpl));
		sva_desc(&ring[tail], IOMMUTEST_OP_FILL, PAGE_SIZE, 0, a, pattern, cpl_iova);
		sva_desc(&ring[(tail + 1) & mask], IOMMUTEST_OP_COPY, PAGE_SIZE, a, b, 0,
			 cpl_iova + sizeof(*cpl));
		sva_desc(&ring[(tail + 2) & mask], IOMMUTEST_OP_COMPARE, PAGE_SIZE, a, b, 0,
			 cpl_iova + 2 * sizeof(*cpl));
		tail = (tail + 3) & mask;
		wmb();
		sva_ring(s.bar, SVA_WQ_WORKLOAD, tail, &w);
		rmb();
		for (k = 0; k < 3; k++)
			if (READ_ONCE(cpl[k].status) != IOMMUTEST_ST_SUCCESS)
				ret = -EIO;
		if (w.timed_out || (w.status & SVA_ST_ERROR))
			ret = -EIO;
round_done:
		if (b != DMA_MAPPING_ERROR && !dma_mapping_error(dev, b))
			dma_unmap_page(dev, b, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (a != DMA_MAPPING_ERROR && !dma_mapping_error(dev, a))
			dma_unmap_page(dev, a, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (!ret && (*(u64 *)page_address(pd) != pattern ||
			     *(u64 *)(page_address(pd) + PAGE_SIZE - 8) != pattern))
			ret = -EIO;
		if (ret)
			pr_err("iommutest: dma_loop round %u: %d (WQ status %#x error %u)\n", i, ret,
			       w.status, w.error);
		if (ps)
			__free_page(ps);
		if (pd)
			__free_page(pd);
	}
	writel(0, s.bar + SVA_WQ(SVA_WQ_WORKLOAD, SVA_WQ_CTL));
	writel(BIT(SVA_WQ_WORKLOAD), s.bar + SVA_ERR_STATUS);
free:
	if (ring)
		dma_free_coherent(dev, PAGE_SIZE, ring, ring_iova);
	if (cpl)
		dma_free_coherent(dev, PAGE_SIZE, cpl, cpl_iova);
put:
	sva_dev_put(&s);
	return ret;
}

static ssize_t dma_loop_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned int n;
	int ret = kstrtouint_from_user(buf, len, 0, &n);

	if (ret)
		return ret;
	if (!n || n > 100000)
		return -EINVAL;
	mutex_lock(&sva_lock);
	ret = sva_dma_loop(n);
	mutex_unlock(&sva_lock);
	return ret ? ret : len;
}

static const struct file_operations dma_loop_fops = {
	.owner = THIS_MODULE,
	.write = dma_loop_write,
};

void iommutest_sva_init(struct dentry *dir)
{
#ifdef SVA_OPS
	debugfs_create_file("sva", 0600, dir, NULL, &sva_fops);
	debugfs_create_file("sva_skip", 0444, dir, NULL, &sva_skip_fops);
#endif
	debugfs_create_file("dma_loop", 0200, dir, NULL, &dma_loop_fops);
}

void iommutest_sva_exit(void)
{
#ifdef SVA_OPS
	sva_features_off();
#endif
}
