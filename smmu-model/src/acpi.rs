//! The IORT ACPI table (Arm DEN 0049, IO Remapping Table, issue E) and a
//! device-tree node (Linux binding `arm,smmu-v3`), both built from the
//! [`SmmuConfig`].
//!
//! The IORT holds three nodes: an ITS group (the MSI target), the SMMUv3
//! (whose own MSIs map to the ITS), and a PCI root complex whose requester
//! IDs map one-to-one onto StreamIDs of the SMMU.

use acpi_tables::sdt::Sdt;

use crate::SmmuConfig;
use crate::regs::FRAME_SIZE;

/// IORT node types (DEN 0049 table 4).
pub mod node {
    /// ITS group.
    pub const ITS_GROUP: u8 = 0;
    /// PCI root complex.
    pub const ROOT_COMPLEX: u8 = 2;
    /// SMMUv3.
    pub const SMMU_V3: u8 = 4;
}

/// Offsets of the nodes in the table this module builds.
pub const ITS_OFFSET: u32 = 48;
/// SMMUv3 node offset.
pub const SMMU_OFFSET: u32 = ITS_OFFSET + ITS_LEN;
/// Root complex node offset.
pub const RC_OFFSET: u32 = SMMU_OFFSET + SMMU_LEN;
const ID_MAPPING_LEN: u32 = 20;
const ITS_LEN: u32 = 24;
const SMMU_LEN: u32 = 68 + ID_MAPPING_LEN;
const RC_LEN: u32 = 40 + ID_MAPPING_LEN;

fn le16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn le32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn le64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Node header (DEN 0049 3.1): type, length, revision, identifier, number
/// of ID mappings and their offset.
fn header(v: &mut Vec<u8>, ty: u8, len: u32, rev: u8, id: u32, mappings: u32, map_off: u32) {
    v.push(ty);
    le16(v, u16::try_from(len).unwrap_or(u16::MAX));
    v.push(rev);
    le32(v, id);
    le32(v, mappings);
    le32(v, if mappings == 0 { 0 } else { map_off });
}

/// One ID mapping (DEN 0049 3.1.1): `count` IDs from `input` to `output`
/// at the node at `target`.
fn id_mapping(v: &mut Vec<u8>, input: u32, count: u32, output: u32, target: u32, single: bool) {
    le32(v, input);
    le32(v, count.saturating_sub(1));
    le32(v, output);
    le32(v, target);
    le32(v, u32::from(single));
}

/// The IORT table bytes for `c` (with checksum), naming `its_id` as the
/// ITS that receives MSIs.
pub fn iort(c: &SmmuConfig, its_id: u32) -> Vec<u8> {
    let mut body = Vec::new();
    le32(&mut body, 3); // number of nodes
    le32(&mut body, ITS_OFFSET);
    le32(&mut body, 0); // reserved

    // ITS group node.
    header(&mut body, node::ITS_GROUP, ITS_LEN, 1, 0, 0, 0);
    le32(&mut body, 1);
    le32(&mut body, its_id);

    // SMMUv3 node (DEN 0049 3.1.1.2).
    header(&mut body, node::SMMU_V3, SMMU_LEN, 4, 1, 1, 68);
    le64(&mut body, c.base);
    // Flags: COHACC override (bit 0), DeviceID mapping index valid (bit 4).
    le32(&mut body, u32::from(c.coherent) | (1 << 4));
    le32(&mut body, 0);
    le64(&mut body, 0); // VATOS
    le32(&mut body, 0); // model: generic SMMUv3
    le32(&mut body, c.event_gsiv);
    le32(&mut body, c.pri_gsiv);
    le32(&mut body, c.gerr_gsiv);
    le32(&mut body, c.sync_gsiv);
    le32(&mut body, 0); // proximity domain
    le32(&mut body, 0); // DeviceID mapping index: mapping 0
    // The SMMU's own MSIs: DeviceID 0 at the ITS.
    id_mapping(&mut body, 0, 1, 0, ITS_OFFSET, true);

    // PCI root complex node (DEN 0049 3.1.1.5, revision 4 with the flags
    // word): RID n -> StreamID n.
    header(&mut body, node::ROOT_COMPLEX, RC_LEN, 4, 2, 1, 40);
    le32(&mut body, 1); // cache coherent
    body.push(0); // allocation hints
    le16(&mut body, 0);
    body.push(0); // memory access flags
    // ATS attribute: bit 0 ATS, bit 1 PRI, bit 2 PASID forwarding.
    let ats = u32::from(c.ats) | (u32::from(c.pri) << 1) | (u32::from(c.ssid_bits > 0) << 2);
    le32(&mut body, ats);
    le32(&mut body, 0); // PCI segment
    body.push(c.oas_bits); // memory address size limit
    le16(&mut body, u16::from(c.ssid_bits)); // PASID capabilities: max width
    body.push(0);
    le32(&mut body, 0); // flags (revision 4)
    let sids = 1u32
        .checked_shl(u32::from(c.sid_bits.min(16)))
        .unwrap_or(0x1_0000);
    id_mapping(&mut body, 0, sids, 0, SMMU_OFFSET, false);

    let mut t = Sdt::new(*b"IORT", 36, 3, *b"IOMMUE", *b"SMMUV3  ", 1);
    t.append_slice(&body);
    t.update_checksum();
    t.as_slice().to_vec()
}

/// A device-tree node for the SMMU (Linux binding
/// Documentation/devicetree/bindings/iommu/arm,smmu-v3.yaml), as DTS text.
/// `msi_parent` is the label of the ITS node.
pub fn device_tree_node(c: &SmmuConfig, msi_parent: &str) -> String {
    let mut s = format!(
        "iommu@{:x} {{\n\tcompatible = \"arm,smmu-v3\";\n\treg = <{:#x} {:#x} 0x0 {:#x}>;\n",
        c.base,
        c.base >> 32,
        c.base & 0xffff_ffff,
        FRAME_SIZE
    );
    let irqs: Vec<(&str, u32)> = [
        ("eventq", c.event_gsiv),
        ("priq", c.pri_gsiv),
        ("gerror", c.gerr_gsiv),
        ("cmdq-sync", c.sync_gsiv),
    ]
    .into_iter()
    .filter(|(n, g)| *g >= 32 && (*n != "priq" || c.pri))
    .collect();
    if !irqs.is_empty() {
        // GIC_SPI = 0, IRQ_TYPE_EDGE_RISING = 1; SPI number = GSIV - 32.
        let cells: Vec<String> = irqs
            .iter()
            .map(|(_, g)| format!("<0 {} 1>", g.saturating_sub(32)))
            .collect();
        let names: Vec<String> = irqs.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        s.push_str(&format!("\tinterrupts = {};\n", cells.join(", ")));
        s.push_str(&format!("\tinterrupt-names = {};\n", names.join(", ")));
    }
    if c.coherent {
        s.push_str("\tdma-coherent;\n");
    }
    s.push_str("\t#iommu-cells = <1>;\n");
    if c.msi {
        s.push_str(&format!("\tmsi-parent = <&{msi_parent}>;\n"));
    }
    s.push_str("};\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(t: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(t[o..o + 4].try_into().unwrap())
    }

    // DEN 0049: header, node count and offsets, checksum.
    #[test]
    fn iort_layout_and_checksum() {
        let c = SmmuConfig::default();
        let t = iort(&c, 0);
        assert_eq!(&t[0..4], b"IORT");
        assert_eq!(u32_at(&t, 4) as usize, t.len());
        assert_eq!(t.len(), (RC_OFFSET + RC_LEN) as usize);
        assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(u32_at(&t, 36), 3);
        assert_eq!(u32_at(&t, 40), ITS_OFFSET);
        let smmu = SMMU_OFFSET as usize;
        assert_eq!(t[smmu], node::SMMU_V3);
        assert_eq!(
            u64::from_le_bytes(t[smmu + 16..smmu + 24].try_into().unwrap()),
            c.base
        );
        let rc = RC_OFFSET as usize;
        assert_eq!(t[rc], node::ROOT_COMPLEX);
        // RC mapping: 65536 RIDs -> SMMU node.
        assert_eq!(u32_at(&t, rc + 12), 40, "ID mappings after the flags");
        assert_eq!(u32_at(&t, rc + 40 + 4), 0xffff);
        assert_eq!(u32_at(&t, rc + 40 + 12), SMMU_OFFSET);
        assert_eq!(u32_at(&t, rc + 24) & 1, 1);
    }

    #[test]
    fn iort_ats_attribute_follows_config() {
        let c = SmmuConfig::parse_props("ats=off,pri=off").unwrap();
        let t = iort(&c, 0);
        assert_eq!(u32_at(&t, RC_OFFSET as usize + 24) & 3, 0);
    }

    #[test]
    fn device_tree_node_has_binding_properties() {
        let c = SmmuConfig {
            event_gsiv: 106,
            gerr_gsiv: 108,
            ..SmmuConfig::default()
        };
        let s = device_tree_node(&c, "its");
        assert!(s.starts_with("iommu@9000000 {"), "{s}");
        assert!(s.contains("compatible = \"arm,smmu-v3\";"));
        assert!(s.contains("reg = <0x0 0x9000000 0x0 0x20000>;"));
        assert!(s.contains("interrupts = <0 74 1>, <0 76 1>;"), "{s}");
        assert!(s.contains("interrupt-names = \"eventq\", \"gerror\";"));
        assert!(s.contains("#iommu-cells = <1>;"));
        assert!(s.contains("msi-parent = <&its>;"));
    }
}
