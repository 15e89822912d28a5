//! The subject common name of an X.509 certificate, for `use_identity_as_username`: a small
//! DER walk over a certificate rustls has already verified (no other field is interpreted).
//! Returns None for anything unexpected rather than guessing.

/// One DER element: (tag, contents, rest of the input).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

/// The first common name of the certificate's subject, if it is a UTF-8 compatible string.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    // serial, signature algorithm, issuer, validity, then the subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = tlv(rest)? else {
        return None;
    };
    while !name.is_empty() {
        let (tag, mut set, r) = tlv(name)?;
        name = r;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, atv, r) = tlv(set)?;
            set = r;
            let (0x06, oid, value) = tlv(atv)? else {
                return None;
            };
            if oid != OID_CN {
                continue;
            }
            let (tag, v, _) = tlv(value)?;
            // UTF8String, PrintableString, IA5String.
            return match tag {
                0x0c | 0x13 | 0x16 => std::str::from_utf8(v).ok().map(str::to_string),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Store");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sensor-7");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("sensor-7"));
    }

    #[test]
    fn garbage_gives_none() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }
}
