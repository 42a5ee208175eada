// SPDX-License-Identifier: GPL-2.0-only
/*
 * odirect_sha DEVICE LENGTH: reads the first LENGTH bytes of DEVICE with O_DIRECT (so every
 * byte comes from a device DMA into this process's buffer, through the IOMMU) and prints
 * their SHA-256 (FIPS 180-4) in hex. Exit status 0 on success, 1 on any error (with a reason
 * on stdout, so the payload can put it in its report line).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

struct sha256 {
	uint32_t h[8];
	uint8_t buf[64];
	uint64_t len;
	size_t fill;
};

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
	e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
	for (i = 0; i < 64; i++) {
		uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

		h = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
	s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(s->h, iv, sizeof(iv));
	s->len = 0;
	s->fill = 0;
}

static void sha256_update(struct sha256 *s, const uint8_t *p, size_t n)
{
	s->len += n;
	while (n) {
		size_t take = 64 - s->fill < n ? 64 - s->fill : n;

		memcpy(s->buf + s->fill, p, take);
		s->fill += take;
		p += take;
		n -= take;
		if (s->fill == 64) {
			sha256_block(s, s->buf);
			s->fill = 0;
		}
	}
}

static void sha256_final(struct sha256 *s, uint8_t out[32])
{
	uint64_t bits = s->len * 8;
	uint8_t pad = 0x80, zero = 0, lenb[8];
	int i;

	sha256_update(s, &pad, 1);
	while (s->fill != 56)
		sha256_update(s, &zero, 1);
	for (i = 0; i < 8; i++)
		lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_update(s, lenb, 8);
	for (i = 0; i < 32; i++)
		out[i] = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

/*
 * --time BLOCK DEVICE LENGTH: reads LENGTH bytes with O_DIRECT in BLOCK-sized requests, without
 * hashing, and prints "block=B bytes=N usecs=U mibs=M" (the whole-VM benchmark's disk figure).
 */
static int timed_read(const char *dev, unsigned long long block, unsigned long long want)
{
	struct timespec t0, t1;
	unsigned long long done = 0, usecs;
	void *buf;
	int fd;

	if (block == 0 || block % 512 || block > (1 << 20) || want == 0 || want % block) {
		printf("error: block %llu must be a multiple of 512 up to 1 MiB dividing length %llu\n",
		       block, want);
		return 1;
	}
	fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0) {
		printf("error: open %s with O_DIRECT: %s\n", dev, strerror(errno));
		return 1;
	}
	if (posix_memalign(&buf, 4096, block)) {
		printf("error: no memory\n");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (done < want) {
		ssize_t got = pread(fd, buf, block, (off_t)done);

		if (got <= 0) {
			printf("error: read at %llu: %s\n", done, got ? strerror(errno) : "end of device");
			return 1;
		}
		done += (unsigned long long)got;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	usecs = (unsigned long long)(t1.tv_sec - t0.tv_sec) * 1000000ULL +
		(unsigned long long)((t1.tv_nsec - t0.tv_nsec) / 1000);
	if (usecs == 0)
		usecs = 1;
	printf("block=%llu bytes=%llu usecs=%llu mibs=%.2f\n", block, done, usecs,
	       (double)done / (1024.0 * 1024.0) / ((double)usecs / 1e6));
	return 0;
}

int main(int argc, char **argv)
{
	struct sha256 s;
	uint8_t digest[32];
	unsigned long long want, done = 0;
	void *buf;
	int fd, i;

	if (argc == 2 && strcmp(argv[1], "--self-test") == 0) {
		/* FIPS 180-4 example "abc". */
		static const char *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
		char hex[65];

		sha256_init(&s);
		sha256_update(&s, (const uint8_t *)"abc", 3);
		sha256_final(&s, digest);
		for (i = 0; i < 32; i++)
			sprintf(hex + 2 * i, "%02x", digest[i]);
		printf("%s\n", hex);
		return strcmp(hex, abc) != 0;
	}
	if (argc == 5 && strcmp(argv[1], "--time") == 0)
		return timed_read(argv[3], strtoull(argv[2], NULL, 0), strtoull(argv[4], NULL, 0));
	if (argc != 3) {
		printf("usage: odirect_sha DEVICE LENGTH | --time BLOCK DEVICE LENGTH | --self-test\n");
		return 1;
	}
	want = strtoull(argv[2], NULL, 0);
	if (want == 0 || want % 512) {
		printf("length %s is not a positive multiple of 512\n", argv[2]);
		return 1;
	}
	fd = open(argv[1], O_RDONLY | O_DIRECT);
	if (fd < 0) {
		printf("open %s with O_DIRECT: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (posix_memalign(&buf, 4096, CHUNK)) {
		printf("no memory\n");
		return 1;
	}
	sha256_init(&s);
	while (done < want) {
		size_t n = want - done < CHUNK ? (size_t)(want - done) : CHUNK;
		ssize_t got = pread(fd, buf, n, (off_t)done);

		if (got < 0) {
			printf("read at %llu: %s\n", done, strerror(errno));
			return 1;
		}
		if (got == 0) {
			printf("device ends at %llu, before %llu\n", done, want);
			return 1;
		}
		sha256_update(&s, buf, (size_t)got);
		done += (unsigned long long)got;
	}
	sha256_final(&s, digest);
	for (i = 0; i < 32; i++)
		printf("%02x", digest[i]);
	printf("\n");
	return 0;
}
