//! The spell catalog read from a directory of `*.json` files, as the local server and the tests
//! load it (the Lambdas compile theirs in: `Catalog::from_sources`).

use std::path::{Path, PathBuf};

use spellcast_domain::catalog::{Catalog, CatalogError};

/// Loads and checks every `*.json` file in `dir`, input schemas compiled.
pub fn load_catalog(dir: &Path) -> Result<Catalog, CatalogError> {
    let fail = |file: &Path, reason: String| CatalogError {
        file: file.to_owned(),
        reason,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, e.to_string()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| fail(&file, e.to_string()))?;
        sources.push((file, text));
    }
    if sources.is_empty() {
        return Err(fail(dir, "no spell files (*.json)".into()));
    }
    let catalog = Catalog::from_sources(sources.iter().map(|(f, t)| (f.as_path(), t.as_str())))?;
    catalog.compile_schemas()?;
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("spellcast-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.json"), "{ not json").unwrap();
        let err = load_catalog(&dir).unwrap_err();
        assert!(err.to_string().contains("t.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
