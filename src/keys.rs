//! x25519 keys exactly as the standard WireGuard tools write them.
//!
//! This module owns key generation (clamped, like `wg genkey`), the base64 text form (standard
//! alphabet with padding: 44 characters), deriving a public key from a private key (`wg pubkey`)
//! and reading a private key file while warning about loose permissions (as `wg` does).
//!
//! It leaves to its caller: where key files live, what to do with warnings (the config layer
//! collects them), and printing errors. The key types are boringtun's re-exports of x25519-dalek
//! 2.x, so keys from here go straight into `boringtun::noise::Tunn::new`. `StaticSecret` zeroizes
//! itself on drop; this module avoids extra copies of secret bytes where it can.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
pub use boringtun::x25519::{PublicKey, StaticSecret};

/// Length of a raw key (private, public or preshared) in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64 text form: 43 symbols and one `=`.
pub const ENCODED_LEN: usize = 44;
/// A key file or key on standard input larger than this is not a key (bounded read).
const MAX_KEY_INPUT: u64 = 4096;

/// Why a key could not be decoded, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text has the wrong length. Retrying with the same text will not help.
    #[error(
        "a WireGuard key is {ENCODED_LEN} base64 characters ending in '=', got {found} characters"
    )]
    Length {
        /// Characters found after trimming whitespace.
        found: usize,
    },
    /// The text is 44 characters but does not end in exactly one `=`. Not retryable.
    #[error("a WireGuard key ends in exactly one '=' (base64 padding of 32 bytes)")]
    Padding,
    /// A character outside the standard base64 alphabet. Not retryable.
    #[error("invalid base64 character {ch:?} at position {position}")]
    Character {
        /// The offending character.
        ch: char,
        /// Its byte offset in the trimmed text.
        position: usize,
    },
    /// The last symbol carries bits beyond the 32 bytes: a corrupted or hand-edited key.
    /// Not retryable.
    #[error("not a canonical base64 key: the last symbol before '=' has extra bits set")]
    NonCanonical,
    /// Reading the key (file or standard input) failed. Retry after fixing the cause.
    #[error("cannot read {what}: {source}")]
    Read {
        /// What was being read, e.g. `key file "/etc/wgagent/agent.key"`.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The operating system's random number generator failed (practically never on Linux).
    #[error("operating system random number generator failed: {0}")]
    Random(getrandom::Error),
    /// Writing a key to the output failed (closed pipe, full disk). Retry after fixing it.
    #[error("cannot write key: {0}")]
    Write(#[source] io::Error),
}

/// A non-fatal finding while reading a key; the caller decides how to report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// The key file can be accessed by its group or by others (mode & 0o077 != 0).
    #[error(
        "key file {} is accessible by group or others (mode {mode:04o}); \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    LoosePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`mode & 0o7777`).
        mode: u32,
    },
}

/// Generates a new private key from the OS random number generator, clamped like `wg genkey`.
///
/// # Panics
/// Only if the operating system's random number generator fails, which on Linux (the
/// `getrandom` syscall) does not happen once the system has booted. Continuing without
/// randomness would be worse than stopping; use [`try_generate`] to handle it instead.
pub fn generate() -> StaticSecret {
    // Invariant: see "# Panics" above; rand_core's OsRng (used by x25519-dalek) also panics here.
    try_generate().expect("operating system random number generator failed")
}

/// Like [`generate`], but returns the RNG failure instead of panicking.
pub fn try_generate() -> Result<StaticSecret, KeyError> {
    let mut bytes = [0u8; KEY_LEN];
    getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
    // Same clamping as wg's curve25519_clamp_secret: x25519 clamps on use anyway, but storing
    // clamped bytes makes our key files byte-identical in form to `wg genkey` output.
    bytes[0] &= 248;
    bytes[31] = (bytes[31] & 127) | 64;
    Ok(StaticSecret::from(bytes))
}

/// The public key belonging to `secret` (what `wg pubkey` prints).
pub fn public_key(secret: &StaticSecret) -> PublicKey {
    PublicKey::from(secret)
}

/// Encodes any 32-byte key (private, public, preshared) as 44 characters of base64.
pub fn encode_key(bytes: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes 44 characters of base64 (surrounding whitespace ignored) into 32 key bytes.
///
/// Strict like wg's `key_from_base64`: exact length, one `=`, canonical last symbol.
pub fn decode_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    if text.len() != ENCODED_LEN {
        return Err(KeyError::Length {
            found: text.chars().count(),
        });
    }
    if !text.ends_with('=') || text.ends_with("==") {
        return Err(KeyError::Padding);
    }
    let mut out = [0u8; KEY_LEN];
    match STANDARD.decode_slice(text, &mut out) {
        Ok(KEY_LEN) => Ok(out),
        Ok(_) => Err(KeyError::Padding),
        Err(base64::DecodeSliceError::DecodeError(e)) => Err(match e {
            base64::DecodeError::InvalidByte(position, byte) => KeyError::Character {
                ch: text
                    .get(position..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::from(byte)),
                position,
            },
            base64::DecodeError::InvalidLastSymbol(..) => KeyError::NonCanonical,
            base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
                KeyError::Padding
            }
        }),
        // Cannot happen: 43 symbols + '=' decode to exactly 32 bytes; report it as a length issue.
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => Err(KeyError::Length {
            found: text.chars().count(),
        }),
    }
}

/// Encodes a private key in the form `wg genkey` prints (without the newline).
pub fn encode_private(secret: &StaticSecret) -> String {
    STANDARD.encode(secret.as_bytes())
}

/// Decodes a base64 private key (e.g. from `wg genkey`). Unclamped keys are accepted as-is:
/// x25519 clamps on use, exactly like `wg pubkey`, so the derived public key matches `wg`'s.
pub fn decode_private(text: &str) -> Result<StaticSecret, KeyError> {
    decode_key(text).map(StaticSecret::from)
}

/// Encodes a public key in the form `wg pubkey` prints (without the newline).
pub fn encode_public(public: &PublicKey) -> String {
    STANDARD.encode(public.as_bytes())
}

/// Decodes a base64 public key (e.g. from `wg pubkey`).
pub fn decode_public(text: &str) -> Result<PublicKey, KeyError> {
    decode_key(text).map(PublicKey::from)
}

/// Reads a private key file (base64, surrounding whitespace ignored), warning like `wg` does
/// when the file is accessible by its group or by others.
pub fn read_private_key_file(path: &Path) -> Result<(StaticSecret, Vec<Warning>), KeyError> {
    read_key_file(path).map(|(key, warnings)| (StaticSecret::from(key), warnings))
}

/// Reads any key file (a private key, or a pre-shared key as `wg genpsk` writes it): base64,
/// surrounding whitespace ignored, with the same permission warning.
pub fn read_key_file(path: &Path) -> Result<([u8; KEY_LEN], Vec<Warning>), KeyError> {
    let what = || format!("key file {:?}", path.display().to_string());
    let file = File::open(path).map_err(|source| KeyError::Read {
        what: what(),
        source,
    })?;
    let mode = file
        .metadata()
        .map_err(|source| KeyError::Read {
            what: what(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    let text = read_bounded(file).map_err(|source| KeyError::Read {
        what: what(),
        source,
    })?;
    let key = decode_key(&text)?;
    let mut warnings = Vec::new();
    if mode & 0o077 != 0 {
        warnings.push(Warning::LoosePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok((key, warnings))
}

/// `wgagent genkey`: writes a new private key and a newline, like `wg genkey`.
pub fn genkey(out: &mut impl Write) -> io::Result<()> {
    let secret = try_generate().map_err(io::Error::other)?;
    writeln!(out, "{}", encode_private(&secret))?;
    out.flush()
}

/// `wgagent pubkey`: reads a base64 private key from `input`, writes its public key and a
/// newline, like `wg pubkey`. Anything that is not exactly one key is an error.
pub fn pubkey(input: &mut impl Read, out: &mut impl Write) -> Result<(), KeyError> {
    let text = read_bounded(input).map_err(|source| KeyError::Read {
        what: "standard input".to_owned(),
        source,
    })?;
    let secret = decode_private(&text)?;
    writeln!(out, "{}", encode_public(&public_key(&secret))).map_err(KeyError::Write)?;
    out.flush().map_err(KeyError::Write)
}

/// Reads at most [`MAX_KEY_INPUT`] bytes of UTF-8; more input than that is not a key.
fn read_bounded(input: impl Read) -> io::Result<String> {
    let mut text = String::new();
    input.take(MAX_KEY_INPUT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_KEY_INPUT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_KEY_INPUT} bytes; expected one base64 key"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// RFC 7748 section 6.1, Alice's key pair, base64-encoded.
    const ALICE_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn rfc7748_alice_vector() {
        let secret = decode_private(ALICE_PRIVATE).unwrap();
        assert_eq!(
            hex(secret.as_bytes()),
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
        );
        let public = public_key(&secret);
        assert_eq!(
            hex(public.as_bytes()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(encode_public(&public), ALICE_PUBLIC);
        // The unclamped private key round-trips unchanged (we never rewrite a user's key).
        assert_eq!(encode_private(&secret), ALICE_PRIVATE);
    }

    #[test]
    fn generated_keys_are_clamped_distinct_and_round_trip() {
        let a = generate();
        let b = generate();
        assert_ne!(a.as_bytes(), b.as_bytes());
        for secret in [&a, &b] {
            let bytes = secret.as_bytes();
            assert_eq!(bytes[0] & 7, 0);
            assert_eq!(bytes[31] & 0xc0, 0x40);
            let text = encode_private(secret);
            assert_eq!(text.len(), ENCODED_LEN);
            assert_eq!(decode_private(&text).unwrap().as_bytes(), bytes);
            let public = public_key(secret);
            let decoded = decode_public(&format!("  {}\n", encode_public(&public))).unwrap();
            assert_eq!(decoded, public);
        }
    }

    #[test]
    fn invalid_inputs_are_rejected_with_a_reason() {
        assert!(matches!(decode_key(""), Err(KeyError::Length { found: 0 })));
        assert!(matches!(
            decode_key(&ALICE_PRIVATE[..43]),
            Err(KeyError::Length { found: 43 })
        ));
        let no_pad = format!("{}A", &ALICE_PRIVATE[..43]);
        assert!(matches!(decode_key(&no_pad), Err(KeyError::Padding)));
        let two_pad = format!("{}==", &ALICE_PRIVATE[..42]);
        assert!(matches!(decode_key(&two_pad), Err(KeyError::Padding)));
        let bad_char = format!("{}-{}", &ALICE_PRIVATE[..5], &ALICE_PRIVATE[6..]);
        match decode_key(&bad_char) {
            Err(KeyError::Character {
                ch: '-',
                position: 5,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        // 'p' = 41 = 0b101001: its low two bits would be discarded, so the key is not canonical.
        let non_canonical = format!("{}p=", &ALICE_PRIVATE[..42]);
        assert!(matches!(
            decode_key(&non_canonical),
            Err(KeyError::NonCanonical)
        ));
        let non_ascii = format!("{}é{}", &ALICE_PRIVATE[..3], &ALICE_PRIVATE[5..]);
        assert_eq!(non_ascii.len(), ENCODED_LEN);
        match decode_key(&non_ascii) {
            Err(KeyError::Character {
                ch: 'é',
                position: 3,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let msg = decode_key("abc").unwrap_err().to_string();
        assert!(
            msg.contains("44 base64 characters") && msg.contains("got 3"),
            "{msg}"
        );
    }

    #[test]
    fn genkey_and_pubkey_cli_helpers() {
        let mut out = Vec::new();
        genkey(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.len() == ENCODED_LEN + 1);
        decode_private(&text).unwrap();

        let mut out = Vec::new();
        pubkey(&mut format!("{ALICE_PRIVATE}\n").as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{ALICE_PUBLIC}\n"));

        let mut out = Vec::new();
        assert!(pubkey(&mut "not a key\n".as_bytes(), &mut out).is_err());
        assert!(out.is_empty());
        let huge = vec![b'A'; 10_000];
        assert!(matches!(
            pubkey(&mut huge.as_slice(), &mut Vec::new()),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn key_file_permission_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{ALICE_PRIVATE}\n")).unwrap();

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (secret, warnings) = read_private_key_file(&path).unwrap();
        assert_eq!(encode_private(&secret), ALICE_PRIVATE);
        assert!(warnings.is_empty(), "{warnings:?}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, warnings) = read_private_key_file(&path).unwrap();
        assert_eq!(
            warnings,
            vec![Warning::LoosePermissions {
                path: path.clone(),
                mode: 0o644
            }]
        );
        assert!(warnings[0].to_string().contains("chmod 600"));

        let missing = dir.path().join("missing");
        let err = read_private_key_file(&missing).err().unwrap().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    /// Runs `wg <args>` with `stdin`, returning trimmed stdout.
    fn wg(args: &[&str], stdin: &str) -> String {
        let mut child = Command::new("wg")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "wg {args:?} failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn interop_with_wg_tools() {
        if Command::new("wg").arg("--version").output().is_err() {
            eprintln!("skipping interop_with_wg_tools: `wg` (wireguard-tools) is not on PATH");
            return;
        }
        for _ in 0..8 {
            // Their private key, our public key.
            let theirs = wg(&["genkey"], "");
            let mut ours = Vec::new();
            pubkey(&mut theirs.as_bytes(), &mut ours).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap().trim(),
                wg(&["pubkey"], &theirs)
            );

            // Our private key, their public key.
            let secret = generate();
            let expected = encode_public(&public_key(&secret));
            assert_eq!(wg(&["pubkey"], &encode_private(&secret)), expected);
        }
        assert_eq!(wg(&["pubkey"], ALICE_PRIVATE), ALICE_PUBLIC);
    }
}
