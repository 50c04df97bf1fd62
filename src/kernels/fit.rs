//! What a shader expansion needs of the adapter, read from the shader itself with naga (the
//! WGSL front end wgpu uses): the storage buffers it binds, the bytes of its workgroup
//! variables and the invocations of its workgroup. Each launcher checks its expansion
//! against the device's [`Limits`] before it launches, and each `plan` before the route
//! takes the kernel, so that a kernel edit that outgrows an adapter falls back instead of
//! failing in the driver.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use naga::AddressSpace;
use naga::proc::Layouter;

use super::launch::{Limits, Templated};

/// The resources one shader expansion uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// Storage buffers bound.
    pub storage_buffers: usize,
    /// Bytes of `var<workgroup>` variables.
    pub workgroup_bytes: usize,
    /// Invocations per workgroup (the product of `@workgroup_size`).
    pub invocations: usize,
}

impl Needs {
    /// Whether a device with `limits` runs a shader that needs `self`.
    pub fn fit(self, limits: Limits) -> bool {
        self.storage_buffers <= limits.max_storage_buffers
            && self.workgroup_bytes <= limits.max_workgroup_bytes
            && self.invocations <= limits.max_invocations
    }
}

/// What `kernel` needs. Parsed once per shader and template values in a process; every
/// later call (each launch and plan checks) costs a hash of the values, not an expansion.
///
/// # Panics
/// Where the expanded WGSL does not parse or lay out: a bug in a shader, which the suite's
/// translation test catches first.
pub fn needs(kernel: &Templated) -> Needs {
    static SEEN: Mutex<Option<HashMap<u64, Needs>>> = Mutex::new(None);
    let mut hasher = DefaultHasher::new();
    (kernel.name(), kernel.values()).hash(&mut hasher);
    let key = hasher.finish();
    if let Some(needs) = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return *needs;
    }
    let source = kernel.expand();
    let found = read_needs(&source).unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, found);
    found
}

/// Whether `kernel` runs on a device with `limits`.
pub fn fits(kernel: &Templated, limits: Limits) -> bool {
    needs(kernel).fit(limits)
}

/// The needs of a WGSL module with one compute entry point.
fn read_needs(source: &str) -> Result<Needs, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut layouter = Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| format!("layout: {e}"))?;
    let (mut storage_buffers, mut workgroup_bytes) = (0, 0);
    for (_, var) in module.global_variables.iter() {
        match var.space {
            AddressSpace::Storage { .. } => storage_buffers += 1,
            AddressSpace::WorkGroup => workgroup_bytes += layouter[var.ty].size as usize,
            _ => {}
        }
    }
    let [entry] = module.entry_points.as_slice() else {
        return Err(format!(
            "{} entry points, not one",
            module.entry_points.len()
        ));
    };
    let invocations = entry.workgroup_size.iter().map(|&n| n as usize).product();
    Ok(Needs {
        storage_buffers,
        workgroup_bytes,
        invocations,
    })
}
