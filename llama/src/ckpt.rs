//! Training checkpoints: one file holding the run config, the step (which is also the data
//! position and the schedule state), the model record and the optimizer record, closed by
//! a checksum. Written atomically through a temporary file and a rename.
//!
//! Layout (little-endian): `SUBTRACK-CKPT\0` magic (14 bytes), version u32, then three
//! sections each as u64 length + bytes (config JSON, model record, optimizer record), then
//! step u64, then the XXH3-64 checksum of everything before it. Version 1 closed with an
//! FNV-1a checksum, byte-serial and slow at the larger presets' sizes; it is refused with a
//! message that says so.

use std::path::Path;

use subtrack::checkpoint::write_atomic;

use super::PretrainError;

const MAGIC: &[u8; 14] = b"SUBTRACK-CKPT\0";
const VERSION: u32 = 2;

/// The parts of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The run's [`TrainConfig`](super::TrainConfig) as JSON.
    pub config_json: String,
    /// Steps completed; training resumes at this step and this batch index.
    pub step: u64,
    /// `ModuleRecord::into_bytes` of the model.
    pub model: Vec<u8>,
    /// `ModuleOptimizer::into_bytes` of the optimizer.
    pub optimizer: Vec<u8>,
}

/// The checksum: XXH3, 64 bits.
fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

impl Checkpoint {
    /// Serialise.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.model.len() + self.optimizer.len() + 256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        for section in [self.config_json.as_bytes(), &self.model, &self.optimizer] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        out.extend_from_slice(&self.step.to_le_bytes());
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parse, checking the magic, version, lengths and checksum.
    pub fn from_bytes(data: &[u8]) -> Result<Self, String> {
        if data.len() < MAGIC.len() + 4 + 8 || &data[..MAGIC.len()] != MAGIC {
            return Err("not a subtrack checkpoint (bad magic)".into());
        }
        // The version first: an older file's checksum is another algorithm's.
        let at = MAGIC.len();
        let version = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!(
                "checkpoint version {version}, this build reads version {VERSION} only; \
                 resume it with the build that wrote it, or start the run again"
            ));
        }
        let (body, sum) = data.split_at(data.len() - 8);
        if checksum(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err("checksum mismatch: the file is truncated or corrupt".into());
        }
        let mut pos = at + 4;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = body
                .get(pos..pos + n)
                .ok_or_else(|| "truncated section".to_string())?;
            pos += n;
            Ok(s)
        };
        let mut sections = Vec::new();
        for _ in 0..3 {
            let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
            sections.push(take(len)?.to_vec());
        }
        let step = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let optimizer = sections.pop().expect("3 sections");
        let model = sections.pop().expect("3 sections");
        let config_json = String::from_utf8(sections.pop().expect("3 sections"))
            .map_err(|_| "config section is not UTF-8".to_string())?;
        Ok(Self {
            config_json,
            step,
            model,
            optimizer,
        })
    }

    /// Write to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), PretrainError> {
        write_atomic(path, &self.to_bytes()).map_err(|e| PretrainError::Checkpoint(e.to_string()))
    }

    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, PretrainError> {
        let data = std::fs::read(path).map_err(|e| {
            PretrainError::Checkpoint(format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_bytes(&data)
            .map_err(|e| PretrainError::Checkpoint(format!("{}: {e}", path.display())))
    }
}
