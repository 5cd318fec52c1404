//! Web Push: a notification to a browser (phone included) through its vendor's push service,
//! as the standards say: the message encrypted for the browser's key with `aes128gcm`
//! (RFC 8291 over RFC 8188), the request authorised with a VAPID token (RFC 8292: an ES256 JWT
//! whose audience is the push service's origin, with berth's public key), posted to the
//! subscription's endpoint (RFC 8030). The push service sees neither the text nor a secret.
//!
//! berth's VAPID key pair is made on first use and kept in `DATA_DIR/vapid.key` (PKCS#8,
//! base64url, mode 0600; `BERTH_VAPID_KEY_FILE` moves it). Browsers subscribe with its public
//! key, so a new key means every browser subscribes again.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use ring::{aead, agreement, hkdf};

/// The record size berth declares: one record holds any payload it sends.
const RECORD_SIZE: u32 = 4096;
/// The longest plaintext berth sends: push services take bodies of 4096 bytes at least, and
/// the header (86 bytes), the delimiter and the tag (17) must fit with it.
pub const MAX_PLAINTEXT: usize = 3800;
/// How long a VAPID token is good for (RFC 8292 allows at most 24 hours).
const TOKEN_SECONDS: u64 = 12 * 3600;

/// berth's VAPID identity: the signing key and the contact (`sub`) push services may use.
pub struct Vapid {
    key: EcdsaKeyPair,
    subject: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key())
            .field("subject", &self.subject)
            .finish()
    }
}

impl Vapid {
    /// The key pair from `key_file` (default `DATA_DIR/vapid.key`), made and written there
    /// (mode 0600) on first use.
    pub fn load(data_dir: &Path, key_file: Option<&Path>, subject: String) -> anyhow::Result<Self> {
        let path = key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join("vapid.key"));
        let rng = SystemRandom::new();
        let pkcs8 = if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            B64.decode(text.trim())
                .map_err(|e| anyhow::anyhow!("{}: not base64url: {e}", path.display()))?
        } else {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| anyhow::anyhow!("cannot make a VAPID key"))?;
            crate::vault::write_private(&path, &B64.encode(doc.as_ref()))?;
            tracing::info!(path = %path.display(), "created the Web Push (VAPID) key");
            doc.as_ref().to_vec()
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| anyhow::anyhow!("{}: not a P-256 PKCS#8 key: {e}", path.display()))?;
        Ok(Self { key, subject, rng })
    }

    /// The public key browsers subscribe with (`applicationServerKey`): the uncompressed P-256
    /// point, base64url without padding.
    pub fn public_key(&self) -> String {
        B64.encode(self.key.public_key().as_ref())
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The `Authorization` header for a push to `endpoint`: `vapid t=JWT, k=KEY`.
    pub fn authorization(&self, endpoint: &reqwest::Url, now_unix: u64) -> anyhow::Result<String> {
        let header = B64.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": endpoint.origin().ascii_serialization(),
            "exp": now_unix + TOKEN_SECONDS,
            "sub": self.subject,
        });
        let claims = B64.encode(serde_json::to_vec(&claims)?);
        let input = format!("{header}.{claims}");
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| anyhow::anyhow!("cannot sign the VAPID token"))?;
        Ok(format!(
            "vapid t={input}.{}, k={}",
            B64.encode(sig.as_ref()),
            self.public_key()
        ))
    }

    /// `plaintext` encrypted for the browser's keys with a fresh key pair and salt.
    pub fn encrypt(&self, keys: &PushKeys, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            plaintext.len() <= MAX_PLAINTEXT,
            "the message is longer than {MAX_PLAINTEXT} bytes"
        );
        let mut salt = [0u8; 16];
        self.rng
            .fill(&mut salt)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let private = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &self.rng)
            .map_err(|_| anyhow::anyhow!("cannot make a key pair"))?;
        let public = private
            .compute_public_key()
            .map_err(|_| anyhow::anyhow!("cannot make a key pair"))?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &keys.p256dh);
        let secret = agreement::agree_ephemeral(private, &peer, |s| s.to_vec())
            .map_err(|_| anyhow::anyhow!("the subscription's key is not a P-256 point"))?;
        encrypt_with(&secret, public.as_ref(), keys, &salt, plaintext)
    }
}

/// A browser's push subscription keys (`PushSubscription.getKey`): its P-256 public key and
/// its 16-byte authentication secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PushKeys {
    pub p256dh: Vec<u8>,
    pub auth: Vec<u8>,
}

impl std::fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushKeys(…)")
    }
}

impl PushKeys {
    /// From the base64url strings a browser gives (padding tolerated); checks their sizes and
    /// that the key is a point of the curve.
    pub fn parse(p256dh: &str, auth: &str) -> Result<Self, String> {
        let decode = |s: &str| B64.decode(s.trim().trim_end_matches('='));
        let p256dh = decode(p256dh).map_err(|_| "keys.p256dh is not base64url".to_owned())?;
        let auth = decode(auth).map_err(|_| "keys.auth is not base64url".to_owned())?;
        if p256dh.len() != 65 || p256dh[0] != 4 {
            return Err("keys.p256dh is not an uncompressed P-256 key (65 bytes)".into());
        }
        if auth.len() != 16 {
            return Err("keys.auth is not 16 bytes".into());
        }
        // A point off the curve fails the agreement; find out now, not at the first push.
        let rng = SystemRandom::new();
        let probe = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
            .map_err(|_| "no randomness".to_owned())?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &p256dh);
        agreement::agree_ephemeral(probe, &peer, |_| ())
            .map_err(|_| "keys.p256dh is not a point of P-256".to_owned())?;
        Ok(Self { p256dh, auth })
    }

    /// The form kept (sealed) with the subscription.
    pub fn to_stored(&self) -> String {
        format!("{}.{}", B64.encode(&self.p256dh), B64.encode(&self.auth))
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        let (p, a) = s.split_once('.')?;
        Some(Self {
            p256dh: B64.decode(p).ok()?,
            auth: B64.decode(a).ok()?,
        })
    }
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA-256 (RFC 5869): extract with `salt` from `ikm`, expand with `info` to `len` bytes.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], len: usize) -> anyhow::Result<Vec<u8>> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk
        .expand(info, Len(len))
        .map_err(|_| anyhow::anyhow!("HKDF length"))?;
    let mut out = vec![0u8; len];
    okm.fill(&mut out)
        .map_err(|_| anyhow::anyhow!("HKDF length"))?;
    Ok(out)
}

/// RFC 8291 §3.4 with the agreement already made: `ecdh` is the shared secret of the sender's
/// key pair (`as_public`) and the browser's key.
fn encrypt_with(
    ecdh: &[u8],
    as_public: &[u8],
    keys: &PushKeys,
    salt: &[u8; 16],
    plaintext: &[u8],
) -> anyhow::Result<Vec<u8>> {
    // IKM = HKDF(auth, ecdh, "WebPush: info" || 0 || ua_public || as_public, 32)
    let ikm = hkdf(
        &keys.auth,
        ecdh,
        &[b"WebPush: info\0", &keys.p256dh, as_public],
        32,
    )?;
    let cek = hkdf(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], 16)?;
    let nonce = hkdf(salt, &ikm, &[b"Content-Encoding: nonce\0"], 12)?;
    let key =
        aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| anyhow::anyhow!("AES key"))?;
    let key = aead::LessSafeKey::new(key);
    let nonce =
        aead::Nonce::try_assume_unique_for_key(&nonce).map_err(|_| anyhow::anyhow!("nonce"))?;
    // One record, the last: the plaintext and the delimiter 2, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 17);
    record.extend_from_slice(plaintext);
    record.push(2);
    key.seal_in_place_append_tag(nonce, aead::Aad::empty(), &mut record)
        .map_err(|_| anyhow::anyhow!("AES-GCM"))?;
    // The RFC 8188 header: salt, record size, key id (the sender's public key).
    let mut body = Vec::with_capacity(86 + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(u8::try_from(as_public.len()).map_err(|_| anyhow::anyhow!("key id"))?);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    /// RFC 8291 Appendix A: the published keys, salt and shared secret give the published
    /// message, byte for byte.
    #[test]
    fn encryption_matches_rfc_8291_appendix_a() {
        let keys = PushKeys::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        let as_public = d(
            "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8",
        );
        let ecdh = d("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs");
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            &ecdh,
            &as_public,
            &keys,
            &salt,
            b"When I grow up, I want to be a watermelon",
        )
        .unwrap();
        assert_eq!(
            B64.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn subscription_keys_are_checked() {
        let p = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
        let k = PushKeys::parse(p, "BTBZMqHH6r4Tts7J_aSIgg==").unwrap();
        assert_eq!(PushKeys::from_stored(&k.to_stored()), Some(k));
        assert!(
            PushKeys::parse(p, "BTBZMqHH6r4Tts7J").is_err(),
            "short auth"
        );
        assert!(PushKeys::parse("BCVx", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        // 65 bytes with the right prefix, but not on the curve.
        let off = format!("B{}", "A".repeat(86));
        let e = PushKeys::parse(&off, "BTBZMqHH6r4Tts7J_aSIgg").unwrap_err();
        assert!(e.contains("not a point"), "{e}");
        assert!(PushKeys::parse("!!", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
    }

    /// The token verifies with the public key it names, for the endpoint's origin, and the key
    /// survives a restart (it is read back from its file).
    #[test]
    fn vapid_tokens_verify_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vapid::load(dir.path(), None, "mailto:ops@example.com".into()).unwrap();
        let endpoint = reqwest::Url::parse("https://push.example.net:8443/wpush/abc?x=1").unwrap();
        let auth = v.authorization(&endpoint, 1_700_000_000).unwrap();
        let (t, k) = auth
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(k, v.public_key());
        let (input, sig) = t.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, d(k))
            .verify(input.as_bytes(), &d(sig))
            .unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&d(input.split_once('.').unwrap().1)).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net:8443");
        assert_eq!(claims["exp"], 1_700_000_000 + TOKEN_SECONDS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let again = Vapid::load(dir.path(), None, "mailto:ops@example.com".into()).unwrap();
        assert_eq!(again.public_key(), v.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("vapid.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A message too long for one push is refused, not cut.
        let keys = PushKeys::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        assert!(v.encrypt(&keys, &[b'x'; MAX_PLAINTEXT + 1]).is_err());
        let body = v.encrypt(&keys, b"hi").unwrap();
        assert_eq!(body.len(), 86 + 2 + 1 + 16);
        assert_eq!(&body[16..21], &[0, 0, 16, 0, 65]);
    }
}
