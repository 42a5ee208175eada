//! The `iommu-vmm` command.

fn main() {
    eprintln!("iommu-vmm: not yet able to boot a guest (see README.md, feature table)");
    std::process::exit(2);
}
