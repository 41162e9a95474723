//! The application registry: credential -> application -> approved scopes.
//!
//! Mirrors Konnect's application records as `konnect-application-auth` sees them: an
//! application is found by its `client_id` (for key-auth, the SHA-256 hex of the key), it was
//! registered under one auth strategy, and it is approved for a set of API scopes.

use crate::cache::KeyedMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: String,
    pub client_id: String,
    pub auth_strategy_id: String,
    pub scopes: Vec<String>,
    pub developer_id: Option<String>,
    pub portal_id: Option<String>,
    pub organization_id: Option<String>,
}

impl Application {
    pub fn approved_for(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Applications indexed by `client_id`.
#[derive(Debug, Default)]
pub struct Applications {
    by_client_id: KeyedMap<String, Application>,
}

impl Applications {
    /// Builds the index from (where it was read, application) pairs. Two applications with
    /// one `client_id` are an error, reported with where the second one was read: a credential
    /// must name exactly one application.
    pub fn new<At>(apps: Vec<(At, Application)>) -> Result<Applications, (At, String)> {
        let mut by_client_id = KeyedMap::with_capacity_and_hasher(apps.len(), Default::default());
        for (at, app) in apps {
            if let Some(prev) = by_client_id.get(&app.client_id) {
                let prev: &Application = prev;
                return Err((
                    at,
                    format!("is also the client_id of application {:?}", prev.id),
                ));
            }
            by_client_id.insert(app.client_id.clone(), app);
        }
        Ok(Applications { by_client_id })
    }

    pub fn find(&self, client_id: &str) -> Option<&Application> {
        self.by_client_id.get(client_id)
    }

    pub fn len(&self) -> usize {
        self.by_client_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, client_id: &str) -> Application {
        Application {
            id: id.into(),
            client_id: client_id.into(),
            auth_strategy_id: "s".into(),
            scopes: vec!["orders-v1".into()],
            developer_id: None,
            portal_id: None,
            organization_id: None,
        }
    }

    #[test]
    fn finds_by_client_id_exactly() {
        let apps = Applications::new(vec![(0, app("a", "c1"))]).unwrap();
        assert_eq!(apps.find("c1").unwrap().id, "a");
        assert!(apps.find("C1").is_none());
        assert!(apps.find("c").is_none());
        assert!(apps.find("c1 ").is_none());
        assert!(apps.find("c1").unwrap().approved_for("orders-v1"));
        assert!(!apps.find("c1").unwrap().approved_for("orders-v2"));
    }

    #[test]
    fn refuses_two_applications_with_one_client_id() {
        let err = Applications::new(vec![(0, app("a", "c1")), (1, app("b", "c1"))]).unwrap_err();
        assert_eq!(err.0, 1);
    }
}
