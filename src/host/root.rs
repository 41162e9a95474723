//! The root context: configuration, the tick, and callouts sent from the tick.

use super::raw::{self, BufferType};
use super::{dispatch_all, now_ms, settle, SharedRef};
use crate::config::Config;
use crate::engine::{Engine, Method};
use std::rc::Rc;

/// How often (in milliseconds) keys are checked for refresh and stuck requests are released.
/// Short enough that a worker waiting for another worker's key fetch picks up the result
/// quickly; each tick reads one small shared-data value per issuer.
const TICK_MS: u32 = 200;

/// A configuration for this root context (its first, or a new one): refused (false) when it
/// is not valid, the one before then staying in force.
pub(crate) fn on_configure(shared: &SharedRef, plugin_configuration_size: usize) -> bool {
    // Probed once per VM, first: what the filter may ask of the host depends on it.
    let own = *shared
        .borrow_mut()
        .own_callouts
        .get_or_insert_with(super::resumes_only_own_requests);
    super::follow_host_log_level(own);
    let bytes = match raw::buffer(
        BufferType::PluginConfiguration,
        0,
        plugin_configuration_size,
    ) {
        Ok(b) if !b.is_empty() => b,
        _ => {
            log::error!("app-auth-filter: no configuration given; refusing to start");
            return false;
        }
    };
    let config = match Config::parse(&bytes) {
        Ok((config, warnings)) => {
            for w in warnings {
                log::warn!("app-auth-filter configuration: {w}");
            }
            config
        }
        Err(errors) => {
            for e in &errors {
                log::error!("app-auth-filter configuration: {e}");
            }
            log::error!(
                "app-auth-filter: configuration refused ({} problems)",
                errors.len()
            );
            return false;
        }
    };
    let orphans = {
        let mut s = shared.borrow_mut();
        s.generation = s.generation.wrapping_add(1);
        let generation = s.generation;
        if s.counters.ids_defined() == 0 {
            s.counters = Rc::new(super::HostCounters::define());
        }
        let counters: Rc<dyn crate::metrics::Counters> = s.counters.clone();
        // ngx_wasm_module traps on shared data when nginx has no `shm_kv` zone for the
        // key ("could not resolve namespace"), and Kong defines none unless told to: there
        // the state stays in the worker's VM (each worker fetches keys for itself).
        let store: Rc<dyn crate::shared::SharedStore> = if own {
            Rc::new(crate::shared::MemoryStore::default())
        } else {
            Rc::new(super::HostStore)
        };
        let mut engine = Engine::with_host(Rc::new(config), generation, store, counters.clone());
        if own {
            engine.set_own_callouts();
        }
        // Probed once per VM: the host does not change under us. Not on ngx_wasm_module
        // (Kong), which has no `verify_signature` and traps on a foreign function it does
        // not know (0.6.0: "unknown foreign function"), in on_configure.
        let signatures = s
                .signatures
                .get_or_insert_with(|| {
                    let host = if own {
                        None
                    } else {
                        super::native::HostSignatures::probe(counters)
                    };
                    if host.is_none() {
                        log::info!("app-auth-filter: no native signature verification on this host; verifying in Wasm");
                    }
                    host.map(Rc::new)
                })
                .clone();
        if let Some(host) = signatures {
            engine.set_signature_backend(host);
        }
        let old = s.engine.replace(engine);
        s.callouts.clear();
        old.map(|e| e.waiting_contexts()).unwrap_or_default()
    };
    // Requests that waited on the old configuration's fetches: fail closed (where the
    // host resumes a request only from its own callouts, when their answers come; until
    // then they are still undecided, which the response backstop must know).
    if shared.borrow().own_callouts == Some(true) {
        shared.borrow_mut().orphans.extend(orphans);
    } else {
        let settled = orphans
            .into_iter()
            .map(|id| {
                let deny = super::unavailable("configuration changed while waiting for keys");
                (id, Method::Bearer, deny)
            })
            .collect();
        settle(shared, settled);
    }
    if !shared.borrow().ticking {
        match raw::set_tick_period_ms(TICK_MS) {
                Ok(()) => shared.borrow_mut().ticking = true,
                Err(status) => log::warn!(
                    "app-auth-filter: no tick (host status {status}); keys are fetched on first use only"
                ),
            }
    }
    if own {
        log::info!("app-auth-filter: this host resumes a request only from its own callouts; a waiting request sends its own");
    }
    log::info!("app-auth-filter: configuration loaded");
    true
}

/// The tick: counters flushed, keys refreshed, requests that waited too long released.
pub(crate) fn on_tick(shared: &SharedRef) {
    super::follow_host_log_level(shared.borrow().own_callouts == Some(true));
    if let Ok(s) = shared.try_borrow() {
        s.counters.flush();
    }
    let progress = {
        let mut s = shared.borrow_mut();
        match s.engine.as_mut() {
            Some(engine) => engine.on_tick(now_ms()),
            None => return,
        }
    };
    let settled = dispatch_all(shared, progress, None);
    settle(shared, settled);
}
