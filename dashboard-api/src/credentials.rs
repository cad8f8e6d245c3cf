//! MQTT credentials of devices in the broker's own format.
//!
//! Passwords are hashed as Mosquitto 2 does (`mosquitto_passwd`): PBKDF2-HMAC-SHA512 with
//! a 12-byte random salt, written `$7$<iterations>$<base64 salt>$<base64 hash>`, so the
//! password file the broker reads is produced from the store (`sccr mqtt-passwd`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha512;

use crate::auth::{hex, random_bytes};
use crate::error::ApiError;

/// Mosquitto's default iteration count.
pub const ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;

/// A new random device password (128 bits, hex).
pub fn generate_password() -> Result<String, ApiError> {
    Ok(hex(&random_bytes::<16>()?))
}

/// The `$7$` hash of `password` with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = random_bytes::<SALT_LEN>()?;
    Ok(hash_with(password, &salt, ITERATIONS))
}

/// The `$7$` hash of `password` with the given salt and iteration count.
pub fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let hash = pbkdf2_sha512(password.as_bytes(), salt, iterations);
    format!("$7${iterations}${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
}

/// Whether `password` matches a `$7$` hash.
pub fn verify(password: &str, encoded: &str) -> bool {
    let mut parts = encoded.split('$');
    let (Some(""), Some("7"), Some(iterations), Some(salt), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(iterations), Ok(salt)) = (iterations.parse::<u32>(), STANDARD.decode(salt)) else {
        return false;
    };
    iterations > 0 && hash_with(password, &salt, iterations) == encoded
}

/// PBKDF2 (RFC 8018) with HMAC-SHA512 and one output block (64 bytes, as Mosquitto uses).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let key = Hmac::<Sha512>::new_from_slice(password)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    let mut mac = key.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 64] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = key.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_rfc_vectors() {
        // PBKDF2-HMAC-SHA512, "password"/"salt", 1 and 2 iterations (RFC 6070 style
        // vectors for SHA-512, as published with the Python and OpenSSL test suites).
        assert_eq!(
            hex(&pbkdf2_sha512(b"password", b"salt", 1)),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
        assert_eq!(
            hex(&pbkdf2_sha512(b"password", b"salt", 2)),
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53cf76cab2868a39b9f7840edce4fef5a82be67335c77a6068e04112754f27ccf4e"
        );
    }

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_password("s3cret").unwrap();
        let b = hash_password("s3cret").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$7$101$"));
        assert!(verify("s3cret", &a) && verify("s3cret", &b));
        assert!(!verify("s3cre", &a));
        assert!(!verify("s3cret", "$6$101$AAAA$BBBB"));
        assert!(!verify("s3cret", "garbage"));
    }

    /// The broker's own tool produces hashes this module verifies, so the password file
    /// written from the store is one Mosquitto accepts.
    #[test]
    fn agrees_with_mosquitto_passwd() {
        let tool = ["/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(tool) = tool else {
            assert!(std::env::var("CI").is_err(), "mosquitto_passwd is required under CI");
            eprintln!("SKIPPED: mosquitto_passwd not installed");
            return;
        };
        let file = std::env::temp_dir().join(format!("sccr-passwd-{}", std::process::id()));
        let status = std::process::Command::new(tool)
            .arg("-c")
            .arg("-b")
            .arg(&file)
            .arg("loop-7")
            .arg("pa55word")
            .status()
            .unwrap();
        assert!(status.success());
        let line = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let hash = line.trim().strip_prefix("loop-7:").unwrap();
        assert!(verify("pa55word", hash), "{hash}");
        assert!(!verify("pa55worD", hash));
    }
}
