//! Build script: converts `docs/openapi.yaml` (the API's OpenAPI 3.1 document, written by hand
//! and checked against the code by `tests/openapi.rs`) into JSON in `OUT_DIR`, so the agent can
//! serve `GET /api/v0/openapi.json` without a YAML parser in the binary. A document that is not
//! valid YAML fails the build with the parser's message.

use std::path::Path;

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

const SOURCE: &str = "docs/openapi.yaml";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    let text = std::fs::read_to_string(SOURCE).unwrap_or_else(|e| panic!("{SOURCE}: {e}"));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{SOURCE}: {e}"));
    let [doc] = docs.as_slice() else {
        panic!(
            "{SOURCE}: expected exactly one YAML document, found {}",
            docs.len()
        );
    };
    let json = to_json(doc).unwrap_or_else(|e| panic!("{SOURCE}: {e}"));
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("openapi.json");
    std::fs::write(&out, json.to_string()).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}

fn to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        // Integers beyond i64 (u64::MAX as a maximum) arrive as reals: keep them exact.
        Yaml::Real(s) => match s.parse::<u64>() {
            Ok(u) => Value::from(u),
            Err(_) => s
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("not a JSON number: {s}"))?,
        },
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err(format!("unsupported YAML node {y:?}")),
    })
}
