// SPDX-License-Identifier: GPL-2.0-only
/*
 * sva_user: shared virtual addressing from a user process (Linux 6.1 payload).
 *
 * Maps buffers it never touches, writes descriptors for the PASID test device into its own
 * memory and asks the iommutest module (ioctl IOMMUTEST_SVA_RUN on
 * /sys/kernel/debug/iommutest/sva) to bind this process's address space to the device and run
 * them. Every first access of the device to an untouched page faults in the IOMMU, the device
 * sends a page request (PRI), Linux's IOPF handler faults the page in and answers with a page
 * group response, and the device retries. Checks: the buffers were not resident before
 * (mincore), they are after, the device counted page requests and responses, the dmar page
 * request interrupt fired, every descriptor succeeded and the bytes are right.
 *
 * Prints "IOMMUTEST <name> PASS|FAIL <detail>" lines; nothing at all when the module has no
 * SVA file (kernels other than 6.1) or there is no PASID test device.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kmod/iommutest_uapi.h"

#define PAGE 4096UL
#define A_LEN (64 * 1024UL)	/* filled, then copied to B: write page requests */
#define C_LEN (16 * 1024UL)	/* compared against zeros: read page requests */
#define PATTERN 0x5a5a0000600d0001ULL

/* Sum of the counts of every interrupt line whose name contains "prq" (dmarN-prq). */
static long long prq_irqs(void)
{
	FILE *f = fopen("/proc/interrupts", "r");
	char line[4096];
	long long sum = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *p;

		if (!strstr(line, "prq"))
			continue;
		p = strchr(line, ':');
		if (!p)
			continue;
		if (sum < 0)
			sum = 0;
		for (p++;;) {
			char *end;
			long long v = strtoll(p, &end, 10);

			if (end == p)
				break;
			sum += v;
			p = end;
		}
	}
	fclose(f);
	return sum;
}

/* Pages of [p, p+len) resident in memory. */
static long resident(void *p, size_t len)
{
	unsigned char vec[64];
	size_t n = len / PAGE, i;
	long r = 0;

	if (n > sizeof(vec) || mincore(p, len, vec))
		return -1;
	for (i = 0; i < n; i++)
		r += vec[i] & 1;
	return r;
}

/* Whether the PASID test device (1af4:10f7) is on the PCI bus. */
static int have_device(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	int found = 0;

	while (d && (e = readdir(d)) && !found) {
		char p[512], v[64] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/uevent", e->d_name);
		f = fopen(p, "r");
		while (f && fgets(v, sizeof(v), f))
			if (!strncmp(v, "PCI_ID=1AF4:10F7", 16))
				found = 1;
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int main(void)
{
	struct iommutest_desc *ring;
	struct iommutest_cpl *cpl;
	struct iommutest_sva_run r;
	uint8_t *a, *b, *c, *d;
	long long irq0, irq1;
	long ra, rb, rc;
	unsigned long want_pr = (2 * A_LEN + C_LEN) / PAGE;
	size_t i;
	int fd, ret, err, bad = -1;
	FILE *f;

	fd = open("/sys/kernel/debug/iommutest/sva", O_RDWR);
	if (fd < 0)
		return 0; /* no SVA interface in this kernel's module: no line */
	if (!have_device())
		return 0; /* no PASID test device: no line */
	/* What the IOMMU lacks for SVA (the module decides from its capabilities). */
	f = fopen("/sys/kernel/debug/iommutest/sva_skip", "r");
	if (f) {
		char why[512] = "";

		if (fgets(why, sizeof(why), f) && why[0] && why[0] != '\n') {
			why[strcspn(why, "\n")] = 0;
			printf("IOMMUTEST sva_user SKIP %s\n", why);
			fclose(f);
			return 0;
		}
		fclose(f);
	}
	ring = map(2 * PAGE);
	a = map(A_LEN);
	b = map(A_LEN);
	c = map(C_LEN);
	d = map(C_LEN);
	if (!ring || !a || !b || !c || !d) {
		printf("IOMMUTEST sva_user_bind FAIL mmap: %s\n", strerror(errno));
		return 1;
	}
	/* The ring and the completion records are touched (and locked); a, b, c are not. */
	memset(ring, 0, 2 * PAGE);
	memset(d, 0, C_LEN);
	mlock(ring, 2 * PAGE);
	mlock(d, C_LEN);
	cpl = (struct iommutest_cpl *)((uint8_t *)ring + PAGE);
	ra = resident(a, A_LEN);
	rb = resident(b, A_LEN);
	rc = resident(c, C_LEN);

	ring[0] = (struct iommutest_desc){ .op = IOMMUTEST_OP_FILL, .len = A_LEN,
					   .dst = (uintptr_t)a, .pattern = PATTERN,
					   .cpl = (uintptr_t)&cpl[0] };
	ring[1] = (struct iommutest_desc){ .op = IOMMUTEST_OP_COPY, .len = A_LEN, .src = (uintptr_t)a,
					   .dst = (uintptr_t)b, .cpl = (uintptr_t)&cpl[1] };
	ring[2] = (struct iommutest_desc){ .op = IOMMUTEST_OP_COMPARE, .len = A_LEN,
					   .src = (uintptr_t)a, .dst = (uintptr_t)b,
					   .cpl = (uintptr_t)&cpl[2] };
	ring[3] = (struct iommutest_desc){ .op = IOMMUTEST_OP_COMPARE, .len = C_LEN,
					   .src = (uintptr_t)c, .dst = (uintptr_t)d,
					   .cpl = (uintptr_t)&cpl[3] };
	__sync_synchronize();

	memset(&r, 0, sizeof(r));
	r.ring = (uintptr_t)ring;
	r.ring_size = 64;
	r.count = 4;
	irq0 = prq_irqs();
	ret = ioctl(fd, IOMMUTEST_SVA_RUN, &r);
	err = errno;
	irq1 = prq_irqs();
	if (ret && err == ENODEV)
		return 0; /* no PASID test device: no line */
	if (ret) {
		printf("IOMMUTEST sva_user_bind FAIL ioctl(IOMMUTEST_SVA_RUN): %s (kernel log has the reason)\n",
		       strerror(err));
		return 1;
	}
	printf("IOMMUTEST sva_user_bind PASS pid %d bound at PASID %#x through the driver's sva_bind\n",
	       getpid(), r.pasid);

	for (i = 0; i < 4; i++)
		if (cpl[i].status != IOMMUTEST_ST_SUCCESS) {
			bad = (int)i;
			break;
		}
	if (r.timed_out || r.head != 4 || bad >= 0)
		printf("IOMMUTEST sva_user_dma FAIL head=%u status=%#x error=%u fault_addr=%#llx descriptor %d status %#x%s\n",
		       r.head, r.status, r.error, (unsigned long long)r.fault_addr, bad,
		       bad >= 0 ? cpl[bad].status : 0, r.timed_out ? " (timed out after 10 s)" : "");
	else {
		bad = -1;
		for (i = 0; i < A_LEN / 8 && bad < 0; i++)
			if (((uint64_t *)a)[i] != PATTERN || ((uint64_t *)b)[i] != PATTERN)
				bad = (int)i;
		if (bad >= 0)
			printf("IOMMUTEST sva_user_dma FAIL word %d: a=%#llx b=%#llx want %#llx\n", bad,
			       (unsigned long long)((uint64_t *)a)[bad],
			       (unsigned long long)((uint64_t *)b)[bad], PATTERN);
		else
			printf("IOMMUTEST sva_user_dma PASS fill %lu KiB, copy, compare, compare %lu KiB of untouched zero pages at user VAs, bytes right, %llu us\n",
			       A_LEN / 1024, C_LEN / 1024, (unsigned long long)r.usecs);
	}

	/* Page requests: one per untouched page, each answered; the pages are resident now. */
	if (ra != 0 || rb != 0 || rc != 0)
		printf("IOMMUTEST sva_user_pri FAIL buffers were resident before the run (%ld %ld %ld pages)\n",
		       ra, rb, rc);
	else if (r.page_requests < want_pr || r.page_responses != r.page_requests)
		printf("IOMMUTEST sva_user_pri FAIL page requests %u (want >= %lu), responses %u\n",
		       r.page_requests, want_pr, r.page_responses);
	else if (irq0 < 0 || irq1 <= irq0)
		printf("IOMMUTEST sva_user_pri FAIL no dmar page request interrupt counted in /proc/interrupts (%lld -> %lld)\n",
		       irq0, irq1);
	else if (resident(a, A_LEN) != (long)(A_LEN / PAGE) || resident(b, A_LEN) != (long)(A_LEN / PAGE))
		printf("IOMMUTEST sva_user_pri FAIL buffers not resident after the run (%ld, %ld pages)\n",
		       resident(a, A_LEN), resident(b, A_LEN));
	else
		printf("IOMMUTEST sva_user_pri PASS %u page requests for %lu untouched pages, %u page group responses, prq interrupts %lld -> %lld\n",
		       r.page_requests, want_pr, r.page_responses, irq0, irq1);

	/* After unbind the PASID entry is gone: a run on it stops at the ring read. */
	if ((r.unbind_status & 2) && r.unbind_error == 4)
		printf("IOMMUTEST sva_user_unbind PASS after unbind, PASID %#x faults at the ring read (WQ error %u)\n",
		       r.pasid, r.unbind_error);
	else
		printf("IOMMUTEST sva_user_unbind FAIL after unbind, PASID %#x: WQ status %#x error %u (want ERROR, RING_READ_FAULT)\n",
		       r.pasid, r.unbind_status, r.unbind_error);
	return 0;
}
