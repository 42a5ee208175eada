/*
 * kvm-smoke: proves that /dev/kvm in the L1 runner machine runs real guest code.
 *
 * Part of the nested runner's L1 image (built static by guest-images' runner
 * builder, see guest-images/src/runner.rs). It opens /dev/kvm, checks the API
 * version, creates a VM with 64 KiB of RAM and one vCPU in real mode, runs a
 * few instructions that write "OK\n" to port 0x3f8, then LOOPS port writes to
 * port 0x80 (each one a full exit to this program) and stops on HLT.
 * It prints one machine-readable line:
 *   kvm-smoke: ok api=12 io_exits=N hlt=1 create_us=U run_us=R us_per_exit=E
 * or "kvm-smoke: FAIL <step>: <error>" and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define LOOP_EXITS 1000

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int fail(const char *step)
{
	printf("kvm-smoke: FAIL %s: %s\n", step, strerror(errno));
	fflush(stdout);
	return 1;
}

int main(void)
{
	/* Real-mode code loaded at 0x1000. */
	static const uint8_t code[] = {
		0xba, 0xf8, 0x03,             /* mov dx, 0x3f8 */
		0xb0, 'O', 0xee,              /* mov al, 'O'; out dx, al */
		0xb0, 'K', 0xee,              /* mov al, 'K'; out dx, al */
		0xb0, '\n', 0xee,             /* mov al, '\n'; out dx, al */
		0xba, 0x80, 0x00,             /* mov dx, 0x80 */
		0xb9, LOOP_EXITS & 0xff, LOOP_EXITS >> 8, /* mov cx, LOOP_EXITS */
		0xee,                         /* l: out dx, al */
		0xe2, 0xfd,                   /* loop l */
		0xf4,                         /* hlt */
	};
	double t0 = now_us();
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("open /dev/kvm");
	int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		printf("kvm-smoke: FAIL api version %d (want %d)\n", api, KVM_API_VERSION);
		return 1;
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	size_t mem_size = 0x10000;
	uint8_t *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap guest memory");
	memcpy(mem + 0x1000, code, sizeof(code));
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = mem_size,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL);
	if (run_size < (int)sizeof(struct kvm_run))
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE,
				   MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = 0x1000, .rflags = 0x2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");
	double t1 = now_us();

	char out[16];
	size_t out_len = 0;
	unsigned long io_exits = 0, loop_exits = 0, runs = 0;
	double loop_start = 0, loop_end = 0;
	int halted = 0;
	while (!halted && runs < 100000) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			return fail("KVM_RUN");
		}
		runs++;
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			io_exits++;
			if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x3f8) {
				uint8_t *data = (uint8_t *)run + run->io.data_offset;
				if (out_len < sizeof(out) - 1)
					out[out_len++] = (char)data[0];
			} else if (run->io.port == 0x80) {
				if (loop_exits == 0)
					loop_start = now_us();
				loop_exits++;
				loop_end = now_us();
			}
			break;
		case KVM_EXIT_HLT:
			halted = 1;
			break;
		default:
			printf("kvm-smoke: FAIL unexpected exit reason %u after %lu runs\n",
			       run->exit_reason, runs);
			return 1;
		}
	}
	double t2 = now_us();
	out[out_len] = 0;
	if (!halted || strcmp(out, "OK\n") != 0 || loop_exits != LOOP_EXITS) {
		printf("kvm-smoke: FAIL guest did not run as programmed (halted=%d out_len=%zu loop_exits=%lu)\n",
		       halted, out_len, loop_exits);
		return 1;
	}
	double per_exit = loop_exits > 1 ? (loop_end - loop_start) / (double)(loop_exits - 1) : 0;
	printf("kvm-smoke: ok api=%d io_exits=%lu hlt=1 create_us=%.0f run_us=%.0f us_per_exit=%.1f\n",
	       api, io_exits, t1 - t0, t2 - t1, per_exit);
	fflush(stdout);
	return 0;
}
