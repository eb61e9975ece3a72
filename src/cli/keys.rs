//! `genkey` and `pubkey`: `wg genkey`/`wg pubkey` output by default, one JSON object with
//! `--json`. The key handling itself is [`crate::keys`]'.

use super::json;
use crate::keys;

/// `wgagent genkey [--json]`.
pub fn genkey(as_json: bool) -> anyhow::Result<()> {
    if !as_json {
        return Ok(keys::genkey(&mut std::io::stdout().lock())?);
    }
    let secret = keys::try_generate()?;
    json::print(&json::Keys {
        private_key: Some(keys::encode_private(&secret)),
        public_key: keys::encode_public(&keys::public_key(&secret)),
    })
}

/// `wgagent pubkey [--json] < KEY`.
pub fn pubkey(as_json: bool) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    if !as_json {
        return Ok(keys::pubkey(&mut stdin, &mut std::io::stdout().lock())?);
    }
    let mut line = Vec::new();
    keys::pubkey(&mut stdin, &mut line)?;
    let public_key = String::from_utf8(line)?.trim_end().to_owned();
    json::print(&json::Keys {
        private_key: None,
        public_key,
    })
}
