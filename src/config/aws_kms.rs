//! The `[aws_kms]` section: what it says, checked, as the backend's settings.
//! Read whether or not a keyset uses AWS KMS, so a mistake is reported at once.

use std::time::Duration;

use super::file::AwsKmsSection;
use super::{duration_or, Problems};
use crate::kms::{AwsKmsConfig, Budget};

pub(super) fn aws_kms_config(raw: AwsKmsSection, problems: &mut Problems) -> AwsKmsConfig {
    let defaults = AwsKmsConfig::default();
    let mut check = |field: &str, ok: bool, message: &str| {
        if !ok {
            problems.add(format!("aws_kms.{field}"), message);
        }
    };
    if let Some(region) = &raw.region {
        let ok =
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        check("region", ok, "is not a region name (e.g. \"us-east-1\")");
    }
    if let Some(url) = &raw.endpoint_url {
        check("endpoint_url", url.starts_with("https://") || url.starts_with("http://"), "is not an http(s) URL");
    }
    if let Some(instance) = &raw.instance {
        let mut bytes = instance.bytes();
        let ok = instance.len() <= 32
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        check("instance", ok, "must match [a-z0-9][a-z0-9_-]*, at most 32 characters");
    }
    let max_attempts = raw.max_attempts;
    check("max_attempts", max_attempts.is_none_or(|n| (1..=10).contains(&n)), "must be within 1..=10");
    let rate = |value: Option<u32>, default: u32| value.unwrap_or(default);
    let burst = raw.burst.unwrap_or(defaults.rsa_budget.burst);
    let rsa_budget = Budget { rate: rate(raw.sign_rate_rsa, defaults.rsa_budget.rate), burst };
    let ecc_budget = Budget { rate: rate(raw.sign_rate_ecc, defaults.ecc_budget.rate), burst };
    check("sign_rate_rsa", rsa_budget.rate >= 1, "must be at least 1 (signatures per second)");
    check("sign_rate_ecc", ecc_budget.rate >= 1, "must be at least 1 (signatures per second)");
    check("burst", burst >= 1, "must be at least 1");
    let days = raw.deletion_window_days.unwrap_or(30);
    check("deletion_window_days", (7..=30).contains(&days), "must be within 7..=30 (the range KMS allows)");
    let timeout = duration_or(problems, "aws_kms.timeout", raw.timeout, defaults.timeout.as_secs());
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&timeout) {
        problems.add("aws_kms.timeout", "must be within 1s..=60s");
    }
    let orphan_grace = duration_or(problems, "aws_kms.orphan_grace", raw.orphan_grace, defaults.orphan_grace.as_secs());
    AwsKmsConfig {
        region: raw.region,
        endpoint_url: raw.endpoint_url,
        timeout,
        max_attempts,
        rsa_budget,
        ecc_budget,
        deletion_window_days: i32::try_from(days).unwrap_or(30),
        instance: raw.instance,
        orphan_cleanup: raw.orphan_cleanup.unwrap_or(defaults.orphan_cleanup),
        orphan_grace,
    }
}
