//! The images `make images` (`tools/images.sh`) builds into podman's local storage, by name, as
//! its record (a TSV: name, reference, image ID, digest) lists them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// One built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Where podman keeps it, e.g. `localhost/neurallog/tenant-operator:0.3.0`.
    pub reference: String,
    /// Its content digest (`sha256:...`), as the build recorded it.
    pub digest: String,
}

/// The images of one build.
#[derive(Debug, Clone)]
pub struct Images {
    by_name: BTreeMap<String, BuiltImage>,
    record: PathBuf,
}

impl Images {
    /// The images recorded at `$TESTENV_IMAGES` (the Makefile passes the record of its `images`
    /// step); without it, builds them with `tools/images.sh` first.
    pub fn built() -> anyhow::Result<Self> {
        let record = match std::env::var_os("TESTENV_IMAGES") {
            Some(path) => PathBuf::from(path),
            None => {
                let output = Command::new(crate::repo_root().join("tools/images.sh"))
                    .stderr(Stdio::inherit())
                    .output()
                    .context("cannot run tools/images.sh")?;
                if !output.status.success() {
                    bail!("tools/images.sh failed");
                }
                PathBuf::from(String::from_utf8(output.stdout)?.trim())
            }
        };
        Self::read(&record)
    }

    /// The images a record lists.
    pub fn read(record: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(record)
            .with_context(|| format!("cannot read the image record {}", record.display()))?;
        Ok(Self { by_name: parse(&text), record: record.to_owned() })
    }

    /// The image built as `name` (`operator`, `bundle`, `catalog`, `redis`, `server`, `registry`,
    /// `pause`, `coredns`).
    pub fn get(&self, name: &str) -> anyhow::Result<&BuiltImage> {
        self.by_name.get(name).with_context(|| format!("{} records no image {name}", self.record.display()))
    }
}

fn parse(text: &str) -> BTreeMap<String, BuiltImage> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("name\t"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                [name, reference, _id, digest, ..] => Some((
                    (*name).to_owned(),
                    BuiltImage { reference: (*reference).to_owned(), digest: (*digest).to_owned() },
                )),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_lists_images_by_name() {
        let images =
            parse("name\treference\tid\tdigest\noperator\tlocalhost/neurallog/tenant-operator:1\tabc\tsha256:1\n\n");
        assert_eq!(images["operator"].reference, "localhost/neurallog/tenant-operator:1");
        assert_eq!(images["operator"].digest, "sha256:1");
        assert!(!images.contains_key("name"), "the header is no image");
    }
}
