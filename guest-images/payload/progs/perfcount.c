// SPDX-License-Identifier: GPL-2.0-only
/*
 * perfcount: the VT-d performance counters through Linux's dmar PMU (INTEL_IOMMU_PERF_EVENTS,
 * Linux 6.3+), around a known DMA workload.
 *
 * Finds /sys/bus/event_source/devices/dmar*, reads its type, decodes event encodings from its
 * events/ directory with the bit positions of its format/ directory, opens at most three
 * events at a time (the unit has three counters, so nothing is multiplexed: checked through
 * time_enabled == time_running) with perf_event_open(pid -1, cpu 0), and around each batch
 * writes N to /sys/kernel/debug/iommutest/dma_loop: N rounds of fill/copy/compare on two fresh
 * DMA-API pages of the PASID test device, 11 translated accesses per round (sva.c).
 *
 * Prints IOMMUTEST lines; nothing when there is no PASID test device or the kernel is older
 * than 6.3 (no IOMMU PMU driver).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#define ROUNDS 64
#define PER_ROUND 11

static char pmu_dir[512];

static int read_str(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (!fgets(buf, (int)len, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

static int have_pasid_device(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	char p[512], v[32], dv[32];
	int found = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)) && !found) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (read_str(p, v, sizeof(v)))
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", e->d_name);
		if (read_str(p, dv, sizeof(dv)))
			continue;
		found = !strcmp(v, "0x1af4") && !strcmp(dv, "0x10f7");
	}
	closedir(d);
	return found;
}

/*
 * A term's bits from format/<term>: "config:0-3", "config1:0", "config:4-31". Returns 0 and
 * sets which config word (0, 1, 2) and the bit range.
 */
static int format_of(const char *term, int *word, int *lo, int *hi)
{
	char path[600], buf[128], *p;

	snprintf(path, sizeof(path), "%s/format/%s", pmu_dir, term);
	if (read_str(path, buf, sizeof(buf)))
		return -1;
	if (!strncmp(buf, "config2:", 8))
		*word = 2, p = buf + 8;
	else if (!strncmp(buf, "config1:", 8))
		*word = 1, p = buf + 8;
	else if (!strncmp(buf, "config:", 7))
		*word = 0, p = buf + 7;
	else
		return -1;
	if (sscanf(p, "%d-%d", lo, hi) == 2)
		return 0;
	if (sscanf(p, "%d", lo) == 1) {
		*hi = *lo;
		return 0;
	}
	return -1;
}

/* events/<name>: "event_group=0x3,event=0x001" -> config words. */
static int event_config(const char *name, uint64_t cfg[3])
{
	char path[600], buf[256], *tok, *save = NULL;

	snprintf(path, sizeof(path), "%s/events/%s", pmu_dir, name);
	if (read_str(path, buf, sizeof(buf)))
		return -1;
	cfg[0] = cfg[1] = cfg[2] = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		unsigned long long v = 1;
		int word, lo, hi;

		if (eq) {
			*eq = 0;
			v = strtoull(eq + 1, NULL, 0);
		}
		if (format_of(tok, &word, &lo, &hi))
			return -1;
		if (hi - lo < 63)
			v &= (1ULL << (hi - lo + 1)) - 1;
		cfg[word] |= (uint64_t)v << lo;
	}
	return 0;
}

struct count {
	const char *name;
	int exported;
	unsigned long long value;
};

/* Counts the named events (at most 3) around one workload of ROUNDS rounds. */
static int measure(int type, struct count *c, int n, char *why, size_t whylen)
{
	int fd[3] = { -1, -1, -1 };
	int i, ret = -1, w;
	char num[16];

	for (i = 0; i < n; i++) {
		struct perf_event_attr attr;
		uint64_t cfg[3];

		c[i].value = 0;
		c[i].exported = !event_config(c[i].name, cfg);
		if (!c[i].exported)
			continue;
		memset(&attr, 0, sizeof(attr));
		attr.size = sizeof(attr);
		attr.type = (uint32_t)type;
		attr.config = cfg[0];
		attr.config1 = cfg[1];
		attr.config2 = cfg[2];
		attr.disabled = 1;
		attr.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
		fd[i] = (int)syscall(SYS_perf_event_open, &attr, -1, 0, -1, 0);
		if (fd[i] < 0) {
			snprintf(why, whylen, "perf_event_open(%s, config=%#llx): %s", c[i].name,
				 (unsigned long long)cfg[0], strerror(errno));
			goto out;
		}
	}
	for (i = 0; i < n; i++)
		if (fd[i] >= 0)
			ioctl(fd[i], PERF_EVENT_IOC_ENABLE, 0);
	w = open("/sys/kernel/debug/iommutest/dma_loop", O_WRONLY);
	snprintf(num, sizeof(num), "%d", ROUNDS);
	if (w < 0 || write(w, num, strlen(num)) != (ssize_t)strlen(num)) {
		snprintf(why, whylen, "DMA workload (iommutest/dma_loop): %s", strerror(errno));
		if (w >= 0)
			close(w);
		goto out;
	}
	close(w);
	for (i = 0; i < n; i++) {
		uint64_t v[3];

		if (fd[i] < 0)
			continue;
		ioctl(fd[i], PERF_EVENT_IOC_DISABLE, 0);
		if (read(fd[i], v, sizeof(v)) != sizeof(v)) {
			snprintf(why, whylen, "reading %s: %s", c[i].name, strerror(errno));
			goto out;
		}
		if (v[1] != v[2]) {
			snprintf(why, whylen, "%s was multiplexed (enabled %llu ns, running %llu ns)",
				 c[i].name, (unsigned long long)v[1], (unsigned long long)v[2]);
			goto out;
		}
		c[i].value = v[0];
	}
	ret = 0;
out:
	for (i = 0; i < n; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return ret;
}

static unsigned long long val(struct count *c, int n, const char *name)
{
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(c[i].name, name))
			return c[i].value;
	return 0;
}

int main(void)
{
	struct utsname u;
	int major = 0, minor = 0, type;
	char buf[4096], why[512] = "", ecap_s[64];
	unsigned long long ecap = 0;
	DIR *d;
	struct dirent *e;
	struct count b1[] = { { .name = "iotlb_lookup" }, { .name = "iotlb_hit" }, { .name = "iommu_requests" } };
	struct count b2[] = { { .name = "ctxt_cache_lookup" }, { .name = "pasid_cache_lookup" },
			      { .name = "fs_nonleaf_lookup" } };
	struct count b3[] = { { .name = "ss_nonleaf_lookup" }, { .name = "ctxt_cache_hit" }, { .name = "pasid_cache_hit" } };
	struct count b4[] = { { .name = "pg_req_posted" }, { .name = "fs_nonleaf_hit" },
			      { .name = "int_cache_lookup" } };
	unsigned long long lk, hit, req, miss;
	size_t off = 0;

	if (!have_pasid_device())
		return 0;
	if (uname(&u) || sscanf(u.release, "%d.%d", &major, &minor) != 2 ||
	    major * 100 + minor < 603)
		return 0;
	pmu_dir[0] = 0;
	d = opendir("/sys/bus/event_source/devices");
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, "dmar", 4) && !pmu_dir[0])
			snprintf(pmu_dir, sizeof(pmu_dir), "/sys/bus/event_source/devices/%s", e->d_name);
	if (d)
		closedir(d);
	if (!pmu_dir[0]) {
		int unit = !read_str("/sys/class/iommu/dmar0/intel-iommu/ecap", ecap_s, sizeof(ecap_s));

		if (unit)
			ecap = strtoull(ecap_s, NULL, 16);
		if (!unit && access("/sys/firmware/acpi/tables/DMAR", F_OK))
			printf("IOMMUTEST perf_dmar_pmu SKIP no IOMMU (no ACPI DMAR table): --iommu intel-iommu,x-perfmon=on\n");
		else if (!(ecap & (1ULL << 51)))
			printf("IOMMUTEST perf_dmar_pmu SKIP the unit has no performance monitoring (ECAP.PMS=0, ecap=%#llx): --iommu ...,x-perfmon=on\n",
			       ecap);
		else
			printf("IOMMUTEST perf_dmar_pmu FAIL ECAP.PMS=1 (ecap=%#llx) but Linux registered no dmar PMU (perfmon did not probe)\n",
			       ecap);
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s/type", pmu_dir);
	if (read_str(buf, ecap_s, sizeof(ecap_s))) {
		printf("IOMMUTEST perf_dmar_pmu FAIL cannot read %s\n", buf);
		return 0;
	}
	type = atoi(ecap_s);
	snprintf(buf, sizeof(buf), "%s/events", pmu_dir);
	d = opendir(buf);
	buf[0] = 0;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && off + strlen(e->d_name) + 2 < sizeof(buf))
			off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", off ? "," : "",
						e->d_name);
	if (d)
		closedir(d);
	printf("IOMMUTEST perf_dmar_pmu PASS %s type=%d events=%s\n", strrchr(pmu_dir, '/') + 1,
	       type, buf);

	/* IOTLB: every translated access is a lookup; fresh IOVAs each round miss at least once. */
	if (measure(type, b1, 3, why, sizeof(why))) {
		printf("IOMMUTEST perf_iotlb FAIL %s\n", why);
	} else {
		lk = val(b1, 3, "iotlb_lookup");
		hit = val(b1, 3, "iotlb_hit");
		req = val(b1, 3, "iommu_requests");
		miss = lk >= hit ? lk - hit : 0;
		if (!b1[0].exported || !b1[1].exported || !b1[2].exported)
			printf("IOMMUTEST perf_iotlb FAIL iotlb_lookup/iotlb_hit/iommu_requests not all exported\n");
		else if (lk < ROUNDS * PER_ROUND || req < ROUNDS * PER_ROUND || hit > lk ||
			 hit < ROUNDS * 5 || miss < ROUNDS)
			printf("IOMMUTEST perf_iotlb FAIL %d rounds (>= %d accesses): iotlb_lookup=%llu iotlb_hit=%llu iommu_requests=%llu (want lookups, requests >= %d; hits >= %d; misses >= %d)\n",
			       ROUNDS, ROUNDS * PER_ROUND, lk, hit, req, ROUNDS * PER_ROUND, ROUNDS * 5,
			       ROUNDS);
		else
			printf("IOMMUTEST perf_iotlb PASS %d rounds (>= %d accesses): iotlb_lookup=%llu iotlb_hit=%llu (misses %llu) iommu_requests=%llu\n",
			       ROUNDS, ROUNDS * PER_ROUND, lk, hit, miss, req);
	}

	/* Context, PASID and paging-structure caches: looked up on the IOTLB misses. */
	if (measure(type, b2, 3, why, sizeof(why)) || measure(type, b3, 3, why, sizeof(why))) {
		printf("IOMMUTEST perf_caches FAIL %s\n", why);
	} else {
		unsigned long long cl = val(b2, 3, "ctxt_cache_lookup");
		unsigned long long pl = val(b2, 3, "pasid_cache_lookup");
		unsigned long long fl = val(b2, 3, "fs_nonleaf_lookup");
		unsigned long long sl = val(b3, 3, "ss_nonleaf_lookup");
		unsigned long long ch = val(b3, 3, "ctxt_cache_hit");
		unsigned long long ph = val(b3, 3, "pasid_cache_hit");

		if (cl < ROUNDS || pl < ROUNDS || fl + sl < ROUNDS || ch > cl || ph > pl || !ch || !ph)
			printf("IOMMUTEST perf_caches FAIL ctxt_cache_lookup=%llu hit=%llu pasid_cache_lookup=%llu hit=%llu fs_nonleaf_lookup=%llu ss_nonleaf_lookup=%llu (want lookups >= %d per cache and hits in (0, lookups])\n",
			       cl, ch, pl, ph, fl, sl, ROUNDS);
		else
			printf("IOMMUTEST perf_caches PASS ctxt_cache_lookup=%llu hit=%llu pasid_cache_lookup=%llu hit=%llu fs_nonleaf_lookup=%llu ss_nonleaf_lookup=%llu\n",
			       cl, ch, pl, ph, fl, sl);
	}

	/*
	 * Events the workload must not move: no page requests (DMA-API mappings never fault).
	 * The paging-structure cache hits and interrupt-entry cache lookups are reported.
	 */
	if (measure(type, b4, 3, why, sizeof(why)))
		printf("IOMMUTEST perf_quiet_events FAIL %s\n", why);
	else if (!b4[0].exported || val(b4, 3, "pg_req_posted"))
		printf("IOMMUTEST perf_quiet_events FAIL pg_req_posted=%llu (exported %d) around a workload without page requests\n",
		       val(b4, 3, "pg_req_posted"), b4[0].exported);
	else
		printf("IOMMUTEST perf_quiet_events PASS pg_req_posted=0 fs_nonleaf_hit=%llu int_cache_lookup=%llu\n",
		       val(b4, 3, "fs_nonleaf_hit"), val(b4, 3, "int_cache_lookup"));
	return 0;
}
