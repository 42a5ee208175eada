//! Without the `vtd` feature `--iommu intel-iommu` is refused with a clear message.

use std::sync::Arc;

use iommu_emulator::MsiSink;

use crate::error::{Error, Result};
use crate::iommu::IommuUnit;

const MSG: &str =
    "--iommu intel-iommu: this iommu-vmm was built without the VT-d model (feature `vtd`)";

pub fn validate(_props: &str) -> Result<()> {
    Err(Error::IommuConfig(MSG.into()))
}

pub fn create(_props: &str, _msi: Arc<dyn MsiSink>) -> Result<Arc<dyn IommuUnit>> {
    Err(Error::IommuConfig(MSG.into()))
}
