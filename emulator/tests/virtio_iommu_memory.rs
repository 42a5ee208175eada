//! virtio-queue through `IommuMemory<GuestMemoryMmap, DeviceAddressSpace>`:
//! the device side sees only IOVAs, every access is translated by the
//! IOMMU, and faults are errors, never panics.

use std::sync::Arc;

use iommu_emulator::testing::MapIommu;
use iommu_emulator::{DeviceAddressSpace, Perm, Rid, SourceId};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, IommuMemory};

type Mem = GuestMemoryMmap<()>;

const RAM: u64 = 16 << 20;
/// The virtqueue lives at GPA 0 (where the mock driver puts it) and is
/// mapped for the device at this IOVA.
const QUEUE_IOVA: u64 = 0x8000_0000;
const QUEUE_BYTES: u64 = 0x10000;
const BUF_GPA: u64 = 0x20_0000;
const BUF_IOVA: u64 = 0x4000_0000;
const RO_GPA: u64 = 0x30_0000;
const RO_IOVA: u64 = 0x5000_0000;

struct Fixture {
    ram: Mem,
    iommu: Arc<MapIommu>,
    dev_mem: IommuMemory<Mem, DeviceAddressSpace>,
}

fn fixture() -> Fixture {
    let ram: Mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let iommu = Arc::new(MapIommu::new());
    iommu.map(None, QUEUE_IOVA, 0, QUEUE_BYTES, Perm::RW);
    iommu.map(None, BUF_IOVA, BUF_GPA, 0x2000, Perm::RW);
    iommu.map(None, RO_IOVA, RO_GPA, 0x1000, Perm::R);
    let space = DeviceAddressSpace::new(
        iommu.clone(),
        Arc::new(ram.clone()),
        SourceId::Pci(Rid::new(0, 3, 0)),
    );
    let dev_mem = IommuMemory::new(ram.clone(), space, true, ());
    Fixture {
        ram,
        iommu,
        dev_mem,
    }
}

/// Program a device-side queue with the mock's ring addresses moved to IOVAs.
fn device_queue(mock: &MockSplitQueue<Mem>) -> Queue {
    let mut q = Queue::new(16).unwrap();
    let iova = |gpa: GuestAddress| QUEUE_IOVA + gpa.0;
    let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
    let (l, h) = split(iova(mock.desc_table_addr()));
    q.set_desc_table_address(l, h);
    let (l, h) = split(iova(mock.avail_addr()));
    q.set_avail_ring_address(l, h);
    let (l, h) = split(iova(mock.used_addr()));
    q.set_used_ring_address(l, h);
    q.set_size(16);
    q.set_ready(true);
    q
}

#[test]
fn virtio_chain_at_iovas_reads_and_writes_through_iommu() {
    let f = fixture();
    let mock = MockSplitQueue::create(&f.ram, GuestAddress(0), 16);
    // Driver: a readable request buffer and a writable response buffer.
    f.ram
        .write_slice(b"hello, iommu", GuestAddress(BUF_GPA))
        .unwrap();
    let descs = [
        RawDescriptor::from(Descriptor::new(BUF_IOVA, 12, 0, 0)),
        RawDescriptor::from(Descriptor::new(
            BUF_IOVA + 0x1000,
            8,
            virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    mock.build_desc_chain(&descs).unwrap();

    let mut q = device_queue(&mock);
    let chain = q.pop_descriptor_chain(&f.dev_mem).expect("a chain");
    let head = chain.head_index();
    let descs: Vec<_> = chain.collect();
    assert_eq!(descs.len(), 2);
    let mut buf = [0u8; 12];
    f.dev_mem.read_slice(&mut buf, descs[0].addr()).unwrap();
    assert_eq!(&buf, b"hello, iommu");
    f.dev_mem
        .write_obj(0xdead_beef_u64, descs[1].addr())
        .unwrap();
    q.add_used(&f.dev_mem, head, 8).unwrap();

    // The device's write landed at the GPA behind the IOVA.
    assert_eq!(
        f.ram
            .read_obj::<u64>(GuestAddress(BUF_GPA + 0x1000))
            .unwrap(),
        0xdead_beef
    );
    // The used ring (at GPA, written by the device through its IOVA) moved.
    assert_eq!(mock.used().idx().load(), 1);
    assert!(f.iommu.translations() > 0);
    assert_eq!(f.iommu.faults(), 0);
}

#[test]
fn iommu_memory_unmapped_iova_is_an_error() {
    let f = fixture();
    let mut buf = [0u8; 4];
    assert!(
        f.dev_mem
            .read_slice(&mut buf, GuestAddress(0x7000_0000))
            .is_err()
    );
    // Straddling the end of a mapping fails too.
    assert!(
        f.dev_mem
            .read_slice(&mut [0u8; 16], GuestAddress(BUF_IOVA + 0x2000 - 8))
            .is_err()
    );
    assert!(f.iommu.faults() >= 2);
}

#[test]
fn iommu_memory_write_to_read_only_mapping_is_an_error() {
    let f = fixture();
    f.ram.write_obj(7u32, GuestAddress(RO_GPA)).unwrap();
    assert_eq!(f.dev_mem.read_obj::<u32>(GuestAddress(RO_IOVA)).unwrap(), 7);
    assert!(f.dev_mem.write_obj(9u32, GuestAddress(RO_IOVA)).is_err());
    assert_eq!(f.ram.read_obj::<u32>(GuestAddress(RO_GPA)).unwrap(), 7);
}

#[test]
fn iommu_memory_invalidation_is_effective_immediately() {
    let f = fixture();
    assert!(f.dev_mem.read_obj::<u64>(GuestAddress(BUF_IOVA)).is_ok());
    f.iommu.unmap(None, BUF_IOVA, 0x1000);
    assert!(f.dev_mem.read_obj::<u64>(GuestAddress(BUF_IOVA)).is_err());
    // The neighbouring page is still mapped.
    assert!(
        f.dev_mem
            .read_obj::<u64>(GuestAddress(BUF_IOVA + 0x1000))
            .is_ok()
    );
}

#[test]
fn virtio_descriptor_at_unmapped_iova_pops_nothing_and_does_not_panic() {
    let f = fixture();
    let mock = MockSplitQueue::create(&f.ram, GuestAddress(0), 16);
    mock.build_desc_chain(&[RawDescriptor::from(Descriptor::new(BUF_IOVA, 12, 0, 0))])
        .unwrap();
    let mut q = device_queue(&mock);
    // Revoke the ring mapping: the device can no longer read the avail ring.
    f.iommu.unmap(None, QUEUE_IOVA, QUEUE_BYTES);
    let popped = q.pop_descriptor_chain(&f.dev_mem);
    assert!(popped.is_none());
}

#[test]
fn iommu_memory_huge_access_is_refused_not_allocated() {
    let f = fixture();
    f.iommu.map(None, 0x1_0000_0000, 0, RAM, Perm::RW);
    let mut big = vec![0u8; 8 << 20];
    // 8 MiB spans 2048 pages, above DeviceAddressSpace's bound.
    assert!(
        f.dev_mem
            .read_slice(&mut big, GuestAddress(0x1_0000_0000))
            .is_err()
    );
    // A 64 KiB access is fine.
    assert!(
        f.dev_mem
            .read_slice(&mut big[..0x10000], GuestAddress(0x1_0000_0000))
            .is_ok()
    );
}
