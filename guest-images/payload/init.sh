#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-only
# /init of an iommu-emulator guest image: mounts the usual file systems, loads the modules
# listed in /etc/iommutest/modules (dependency order), runs the payload and prints one line
# per test, "IOMMUTEST <name> PASS|FAIL|SKIP <detail>", then
# "IOMMUTEST-SUMMARY pass=N fail=M skip=K", reports a failed run through the VMM's test-exit
# port 0xf4 (written by the iommutest module), and powers off. Kernel command line options read here:
#   iommutest.disk_sha=HEX   SHA-256 of the first disk_len bytes of /dev/vda
#   iommutest.disk_len=N     bytes to read (default 1048576, a multiple of 512)
#   iommutest.shell=1        start a shell instead of powering off (debugging)
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
# Whole-VM benchmark (benches/src/wholevm.rs): with iommutest.bench=BLOCK[,BLOCK...] this script
# says when it starts (before anything else), times O_DIRECT reads of iommutest.disk_len bytes
# from /dev/vda per block size, prints the disk's IOMMU domain type and powers off.
read -r cmdline </proc/cmdline
case " $cmdline " in
*" iommutest.bench="*)
	read -r up _ </proc/uptime
	echo "IOMMUBENCH init uptime=$up"
	;;
esac
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

pass=0
fail=0
skip=0
report() {
	name=$1
	result=$2
	shift 2
	echo "IOMMUTEST $name $result $*"
	case $result in
	PASS) pass=$((pass + 1)) ;;
	FAIL) fail=$((fail + 1)) ;;
	*) skip=$((skip + 1)) ;;
	esac
}

# The value of a kernel command line option (the last one when it is given twice).
arg() {
	v=""
	for w in $(cat /proc/cmdline); do
		case $w in
		"$1"=*) v=${w#*=} ;;
		esac
	done
	echo "$v"
}

release=$(uname -r)
moddir=/lib/modules/$release

# Modules, in dependency order.
loaded=0
failed=""
while read -r m; do
	[ -n "$m" ] || continue
	if insmod "$moddir/$m" 2>/tmp/insmod.err; then
		loaded=$((loaded + 1))
	else
		failed="$failed ${m##*/}($(head -n1 /tmp/insmod.err))"
	fi
done </etc/iommutest/modules
if [ -z "$failed" ]; then
	report modules_load PASS "$loaded modules"
else
	report modules_load FAIL "could not load:$failed"
fi

bench=$(arg iommutest.bench)
if [ -n "$bench" ]; then
	len=$(arg iommutest.disk_len)
	[ -n "$len" ] || len=1048576
	n=0
	while [ ! -b /dev/vda ] && [ $n -lt 50 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	grp=$(readlink -f /sys/block/vda/device/..)/iommu_group
	dom=none
	[ -r "$grp/type" ] && dom=$(cat "$grp/type")
	echo "IOMMUBENCH domain=$dom modules_failed=${failed:-none}"
	for bs in $(echo "$bench" | tr , ' '); do
		echo "IOMMUBENCH read $(/bin/odirect_sha --time "$bs" /dev/vda "$len")"
	done
	echo "IOMMUBENCH done"
	poweroff -f
fi

# The payload module reads back the first DMAR unit's registers and needs to know whether
# scalable mode was asked on the command line.
dmar_base=0
for u in /sys/class/iommu/dmar*; do
	[ -r "$u/intel-iommu/address" ] && dmar_base=0x$(cat "$u/intel-iommu/address") && break
done
sm=-1
for w in $(cat /proc/cmdline); do
	case $w in
	intel_iommu=*sm_on*) sm=1 ;;
	intel_iommu=*sm_off*) sm=0 ;;
	esac
done
# No ACPI DMAR table: the machine has no IOMMU (`iommu-vmm --iommu none`), so the tests that
# need one SKIP with that reason; with a table and no unit they FAIL.
dmar_table=0
[ -e /sys/firmware/acpi/tables/DMAR ] && dmar_table=1
no_iommu="no IOMMU (no ACPI DMAR table): --iommu intel-iommu"
if insmod /lib/iommutest/iommutest.ko dmar_base=$dmar_base sm=$sm dmar_table=$dmar_table 2>/tmp/insmod.err; then
	report payload_load PASS "iommutest.ko on $release"
else
	report payload_load FAIL "iommutest.ko: $(head -n1 /tmp/insmod.err)"
fi

# IOMMU units the kernel registered.
units=$(ls /sys/class/iommu 2>/dev/null | tr '\n' ' ')
if [ -n "$units" ]; then
	report iommu_present PASS "units: $units"
elif [ "$dmar_table" = 0 ]; then
	report iommu_present SKIP "$no_iommu"
else
	report iommu_present FAIL "no entry in /sys/class/iommu (no DMAR/IOMMU found by the kernel)"
fi

groups=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)
if [ "$groups" -gt 0 ]; then
	report iommu_groups PASS "$groups groups"
elif [ "$dmar_table" = 0 ]; then
	report iommu_groups SKIP "$no_iommu"
else
	report iommu_groups FAIL "/sys/kernel/iommu_groups is empty"
fi

# The virtio-blk disk: wait briefly for it (probing is quick but asynchronous to us).
n=0
while [ ! -e /sys/block/vda ] && [ $n -lt 20 ]; do
	sleep 0.1
	n=$((n + 1))
done
if [ -e /sys/block/vda ]; then
	pci=$(readlink -f /sys/block/vda/device/..)
	if [ -e "$pci/iommu_group" ]; then
		report virtio_blk_group PASS "${pci##*/} in group $(basename "$(readlink "$pci/iommu_group")")"
	elif [ "$dmar_table" = 0 ]; then
		report virtio_blk_group SKIP "$no_iommu"
	else
		report virtio_blk_group FAIL "${pci##*/} has no iommu_group"
	fi
else
	report virtio_blk_group SKIP "no virtio-blk disk (vda)"
fi

# Kernel-side tests of the payload module.
if [ -r /sys/kernel/debug/iommutest/report ]; then
	while read -r tag name result detail; do
		[ "$tag" = IOMMUTEST ] && report "$name" "$result" "$detail"
	done </sys/kernel/debug/iommutest/report
else
	report kmod_report SKIP "payload module not loaded or debugfs missing"
fi

# mdevs of the PASID test device (5.10, 6.12): the module registered the function as an mdev
# parent and made debugfs/iommutest/mdev. Create two mdevs of its type through sysfs (each gets
# a work queue, a domain and a PASID), run the module's mdev tests, remove them.
if [ -e /sys/kernel/debug/iommutest/mdev ]; then
	type=""
	for t in /sys/bus/pci/devices/*/mdev_supported_types/*iommutest_wq; do
		[ -w "$t/create" ] && type=$t && break
	done
	made=""
	why="no mdev_supported_types/*iommutest_wq/create in sysfs"
	if [ -n "$type" ]; then
		why=""
		for u in 6d0f6a2e-8b1c-4e57-9a3d-000000000001 6d0f6a2e-8b1c-4e57-9a3d-000000000002; do
			if echo "$u" >"$type/create" 2>/tmp/mdev.err; then
				made="$made $u"
			else
				why="$why $u: $(head -n1 /tmp/mdev.err)"
			fi
		done
	fi
	if [ -z "$why" ]; then
		report mdev_create PASS "${type##*/}:$made"
	else
		report mdev_create FAIL "$why (dmesg: $(dmesg | grep iommutest | tail -n1))"
	fi
	while read -r tag name result detail; do
		[ "$tag" = IOMMUTEST ] && report "$name" "$result" "$detail"
	done </sys/kernel/debug/iommutest/mdev
	gone=0
	for u in $made; do
		echo 1 >"/sys/bus/mdev/devices/$u/remove" 2>/dev/null
		[ -e "/sys/bus/mdev/devices/$u" ] || gone=$((gone + 1))
	done
	if [ -n "$made" ]; then
		if [ "$gone" -eq "$(echo $made | wc -w)" ]; then
			report mdev_remove PASS "$gone mdevs removed through sysfs"
		else
			report mdev_remove FAIL "$gone of$(echo $made | wc -w) mdevs gone after sysfs remove"
		fi
	fi
fi

# Shared virtual addressing from a user process (6.1) and the IOMMU perf counters (6.3+): the
# programs print IOMMUTEST lines, none where they do not apply (progs/sva_user.c, perfcount.c).
for prog in sva_user perfcount; do
	[ -x "/bin/$prog" ] || continue
	"/bin/$prog" >/tmp/$prog.out 2>&1 || echo "IOMMUTEST $prog FAIL exited with status $?" >>/tmp/$prog.out
	while read -r tag name result detail; do
		[ "$tag" = IOMMUTEST ] && report "$name" "$result" "$detail"
	done </tmp/$prog.out
done

# Disk contents through O_DIRECT (DMA into user pages through the IOMMU).
want=$(arg iommutest.disk_sha)
len=$(arg iommutest.disk_len)
[ -n "$len" ] || len=1048576
if [ -z "$want" ]; then
	report disk_read_sha SKIP "no iommutest.disk_sha= on the kernel command line"
elif [ ! -b /dev/vda ]; then
	report disk_read_sha SKIP "no /dev/vda"
else
	got=$(/bin/odirect_sha /dev/vda "$len")
	if [ "$got" = "$want" ]; then
		report disk_read_sha PASS "$len bytes, sha256 $got"
	else
		report disk_read_sha FAIL "$len bytes: got $got want $want"
	fi
fi

echo "IOMMUTEST-SUMMARY pass=$pass fail=$fail skip=$skip"
# A failure is also reported through the test-exit port: byte 0 there makes the VMM exit with
# status (0 << 1) | 1 = 1 (QEMU's isa-debug-exit rule), the same status the summary line gives
# for a failed run, even if power-off then goes wrong. A passing run just powers off (status 0).
if [ "$fail" -ne 0 ] && [ -w /sys/module/iommutest/parameters/exit_code ]; then
	echo 0 >/sys/module/iommutest/parameters/exit_code
fi

if [ "$(arg iommutest.shell)" = 1 ]; then
	exec sh
fi
poweroff -f
