//! The tuning cache: the variants chosen by measurement, per (adapter, driver,
//! library version) and problem class, in memory and in a small JSON file
//! (`WGPU_ATTENTION_TUNE_CACHE`, see `env.rs`). A corrupt, foreign or
//! out-of-range file is ignored with a warning, never an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tuning::Tuning;

/// Whose measurements a cache entry holds: the adapter, its driver, this
/// library's version (a new version may change the kernels).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey {
    /// The adapter's name.
    pub adapter: String,
    /// Driver name and version info.
    pub driver: String,
    /// This crate's version.
    pub library: String,
}

impl CacheKey {
    /// The key of an adapter described by `info`, for this library.
    pub fn new(info: &wgpu::AdapterInfo) -> Self {
        CacheKey {
            adapter: info.name.clone(),
            driver: format!("{} {}", info.driver, info.driver_info),
            library: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn text(&self) -> String {
        format!("{} | {} | {}", self.adapter, self.driver, self.library)
    }
}

/// The file's format.
#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// `CacheKey` text → class → chosen tuning.
    entries: BTreeMap<String, BTreeMap<String, Tuning>>,
}

const FORMAT: u32 = 1;

/// Tuning choices by device and class, in memory; [`TuneCache::load`] and
/// [`TuneCache::save`] keep them in a JSON file.
#[derive(Default)]
pub struct TuneCache {
    file: CacheFile,
}

impl TuneCache {
    /// An empty cache.
    pub fn new() -> Self {
        TuneCache {
            file: CacheFile {
                version: FORMAT,
                entries: BTreeMap::new(),
            },
        }
    }

    /// The cache in `text` (a file's contents): an empty cache and a warning
    /// when it does not parse, has another format version, or holds a tuning
    /// that does not validate — a corrupt file is never an error.
    pub fn parse(text: &str) -> (Self, Option<String>) {
        match serde_json::from_str::<CacheFile>(text) {
            Ok(f) if f.version != FORMAT => (
                Self::new(),
                Some(format!(
                    "tuning cache format {} (this library reads {FORMAT}): ignored",
                    f.version
                )),
            ),
            Ok(f) => {
                let bad = f
                    .entries
                    .values()
                    .flat_map(|c| c.values())
                    .find_map(|t| t.validated().err());
                match bad {
                    Some(e) => (Self::new(), Some(format!("tuning cache ignored: {e}"))),
                    None => (TuneCache { file: f }, None),
                }
            }
            Err(e) => (
                Self::new(),
                Some(format!("tuning cache does not parse ({e}): ignored")),
            ),
        }
    }

    /// The cache as the file holds it.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(&self.file).expect("a map of strings and tunings serializes")
    }

    /// The cache at `path`: empty without a warning when there is no file.
    pub fn load(path: &std::path::Path) -> (Self, Option<String>) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (c, w) = Self::parse(&text);
                (c, w.map(|w| format!("{}: {w}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Self::new(), None),
            Err(e) => (
                Self::new(),
                Some(format!("{}: {e}: tuning cache ignored", path.display())),
            ),
        }
    }

    /// Writes the cache to `path` (its folder created), through a temporary
    /// file renamed into place so a reader never sees half a file.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_text())?;
        std::fs::rename(tmp, path)
    }

    /// The tuning chosen for `class` on `key`'s device.
    pub fn get(&self, key: &CacheKey, class: &str) -> Option<Tuning> {
        self.file.entries.get(&key.text())?.get(class).copied()
    }

    /// Remembers `tuning` for `class` on `key`'s device.
    pub fn insert(&mut self, key: &CacheKey, class: &str, tuning: Tuning) {
        self.file
            .entries
            .entry(key.text())
            .or_default()
            .insert(class.to_string(), tuning);
    }

    /// Every (class, tuning) kept for `key`'s device.
    pub fn choices(&self, key: &CacheKey) -> Vec<(String, Tuning)> {
        self.file
            .entries
            .get(&key.text())
            .map(|c| c.iter().map(|(k, t)| (k.clone(), *t)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache is keyed by adapter, driver and library version; round-trips
    /// through its file; a corrupt or foreign file is ignored with a warning.
    #[test]
    fn cache_keys_round_trip_and_corrupt_files() {
        let t = Tuning::for_adapter(&wgpu::AdapterInfo::new(
            wgpu::DeviceType::Cpu,
            wgpu::Backend::Vulkan,
        ));
        let info = wgpu::AdapterInfo {
            name: "llvmpipe".into(),
            driver_info: "Mesa 22.3.6".into(),
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan)
        };
        let key = CacheKey::new(&info);
        let other_driver = CacheKey {
            driver: "llvmpipe Mesa 26.1.6".into(),
            ..key.clone()
        };
        let other_version = CacheKey {
            library: "0.0.0".into(),
            ..key.clone()
        };
        let mut c = TuneCache::new();
        let t16 = t.with_fused_rows(16).unwrap();
        c.insert(&key, "fused d64 f32 mask0 nq-many", t16);
        assert_eq!(c.get(&key, "fused d64 f32 mask0 nq-many"), Some(t16));
        assert_eq!(c.get(&other_driver, "fused d64 f32 mask0 nq-many"), None);
        assert_eq!(c.get(&other_version, "fused d64 f32 mask0 nq-many"), None);
        assert_eq!(c.get(&key, "fused d128 f32 mask0 nq-many"), None);
        let (back, warning) = TuneCache::parse(&c.to_text());
        assert!(warning.is_none());
        assert_eq!(back.choices(&key), c.choices(&key));
        for bad in ["", "{", "[1, 2]", "{\"version\": 99, \"entries\": {}}"] {
            let (empty, warning) = TuneCache::parse(bad);
            assert!(warning.is_some(), "{bad:?}");
            assert!(empty.choices(&key).is_empty());
        }
        // A tuning that does not validate (17 cpu rows) is refused.
        let text = c.to_text().replace("\"cpu_rows\": 8", "\"cpu_rows\": 17");
        assert_ne!(text, c.to_text());
        let (empty, warning) = TuneCache::parse(&text);
        assert!(warning.unwrap().contains("cpu_rows") && empty.choices(&key).is_empty());
        // The file: written through a temporary name, read back; a missing file
        // is an empty cache without a warning.
        let dir = std::env::temp_dir().join(format!("wgpu-attention-tune-{}", std::process::id()));
        let path = dir.join("sub").join("tune.json");
        c.save(&path).unwrap();
        let (loaded, warning) = TuneCache::load(&path);
        assert!(warning.is_none() && loaded.get(&key, "fused d64 f32 mask0 nq-many") == Some(t16));
        std::fs::write(&path, "not json").unwrap();
        assert!(TuneCache::load(&path).1.unwrap().contains("tune.json"));
        let (none, warning) = TuneCache::load(&dir.join("missing.json"));
        assert!(warning.is_none() && none.choices(&key).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
