//! One shared copy of each string many blobs and pins name.

use std::collections::HashSet;
use std::sync::Arc;

/// Shared copies of strings that many blobs and pins name (URLs, rules, clients).
#[derive(Debug, Default, Clone)]
pub(crate) struct Strings(HashSet<Arc<str>>);

impl Strings {
    /// The shared copy of `s`.
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    /// The shared copy equal to `a` (`a` itself when there is none yet).
    pub(super) fn adopt(&mut self, a: &mut Arc<str>) {
        match self.0.get(&**a) {
            Some(have) => {
                if !Arc::ptr_eq(have, a) {
                    *a = have.clone();
                }
            }
            None => {
                self.0.insert(a.clone());
            }
        }
    }

    pub(super) fn adopt_opt(&mut self, a: &mut Option<Arc<str>>) {
        if let Some(a) = a {
            self.adopt(a);
        }
    }
}
