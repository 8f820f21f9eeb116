//! The layers of the configuration as figment providers, and their extraction into
//! [`Settings`]. Each layer remembers where it came from (the built-in defaults, a file, one
//! environment variable), so an error is told against the layer that set the key it is about.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{BUILTIN, ConfigError, Settings};

/// Where a layer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    Builtin,
    File(PathBuf),
    /// One environment variable, by name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("the built-in config/default.toml"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(var) => f.write_str(var),
        }
    }
}

/// One layer: its origin and the keys it sets.
pub(super) struct Layer {
    pub origin: Origin,
    pub dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.to_string())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

impl Layer {
    pub fn builtin() -> Layer {
        Layer::toml(Origin::Builtin, BUILTIN).expect("built-in config/default.toml parses")
    }

    /// A TOML file; unreadable or not TOML is an error naming it.
    pub fn file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Layer::toml(Origin::File(path.to_owned()), &text)
    }

    fn toml(origin: Origin, text: &str) -> Result<Layer, ConfigError> {
        let mut map = Toml::string(text)
            .data()
            .map_err(|e| ConfigError::syntax(&origin, &e.kind.to_string()))?;
        let dict = map.remove(&Profile::Default).unwrap_or_default();
        Ok(Layer { origin, dict })
    }
}

/// The layers merged in order (a later one wins, key by key; a list is replaced whole) and
/// extracted. Extraction is figment's "lossy" one: a text value is taken as a number or a
/// boolean where the key wants one, which is how every value from the environment arrives.
pub(super) fn extract(layers: &[Layer]) -> Result<Settings, ConfigError> {
    layers
        .iter()
        .fold(Figment::new(), |f, layer| f.merge(layer))
        .extract_lossy()
        .map_err(|e| ConfigError::from_figment(&e, layers))
}

/// The layer a value at `path` was taken from: the last one that sets it (or sets the part
/// of it that is not a table, for a path into a list).
pub(super) fn origin_of<'a>(layers: &'a [Layer], path: &[String]) -> Option<&'a Origin> {
    layers
        .iter()
        .rev()
        .find(|l| sets(&l.dict, path))
        .map(|l| &l.origin)
}

fn sets(dict: &Dict, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match dict.get(first) {
        None => false,
        Some(Value::Dict(_, inner)) if !rest.is_empty() => sets(inner, rest),
        Some(_) => true,
    }
}
