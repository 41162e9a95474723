//! `config::Config::parse` on arbitrary bytes. Invariants of a configuration that loads:
//! at least one policy, each with at least one strategy, references in range.

#![no_main]

use app_auth_filter::config::{AuthMethods, Config, Strategy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, _warnings) = match Config::parse(data) {
        Ok(ok) => ok,
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a reason");
            return;
        }
    };
    assert!(!config.policies.is_empty(), "loaded with no policy");
    for policy in &config.policies {
        assert!(
            !policy.strategies.is_empty(),
            "policy {:?} has no strategy",
            policy.name
        );
        // A scope and the applications it approves come together.
        assert_eq!(
            config.applications.is_some(),
            policy.scope.is_some(),
            "a policy scope without applications, or applications without a scope"
        );
        // Without applications, a Basic client_id names no strategy: one IdP takes them all.
        if config.applications.is_none() {
            let mut cc = policy.strategies.iter().filter_map(|s| match s {
                Strategy::OpenIdConnect(o) if o.auth_methods.client_credentials => Some(o.issuer),
                _ => None,
            });
            if let Some(first) = cc.next() {
                assert!(cc.all(|i| i == first), "client credentials of two IdPs");
            }
        }
        for s in &policy.strategies {
            match s {
                Strategy::OpenIdConnect(o) => {
                    assert!(o.issuer < config.issuers.len(), "issuer index out of range");
                    assert!(!o.issuers_allowed.is_empty());
                    assert_ne!(o.auth_methods, AuthMethods::default(), "no auth method");
                    assert!(o.leeway <= 3600);
                    assert!(!o.auth_methods.introspection || o.client.is_some());
                    for set in o.scopes_required.iter().chain(&o.audience_required) {
                        assert!(!set.is_empty());
                    }
                    for (_, name) in &o.upstream_headers {
                        assert_eq!(name, &name.to_ascii_lowercase());
                    }
                }
                Strategy::KeyAuth(k) => {
                    assert!(
                        config.applications.is_some(),
                        "key_auth without applications"
                    );
                    assert!(!k.key_names.is_empty());
                    // Kept as given, but never the same header twice.
                    for (i, name) in k.key_names.iter().enumerate() {
                        assert!(!k.key_names[..i]
                            .iter()
                            .any(|n| n.eq_ignore_ascii_case(name)));
                    }
                }
            }
        }
    }
    for issuer in &config.issuers {
        assert!(issuer.discovery.path.starts_with('/'));
        assert!(issuer.names.contains(&issuer.issuer));
        let _ = config.upstream_for(&issuer.discovery);
    }
    for route in [None, Some(""), Some("orders"), Some("r1")] {
        if let Some((i, p)) = config.policy_for(route) {
            assert!(std::ptr::eq(p, &config.policies[i]));
        }
    }
    let l = &config.limits;
    assert!((4..=128).contains(&l.max_json_depth));
    assert!(l.max_jwks_keys >= 1 && l.max_token_bytes >= 256);
    let _ = config.strategy_ids().count();
});
