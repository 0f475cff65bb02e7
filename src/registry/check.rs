//! `registry check` over the configured source: [`bzlmod::check`] reading a
//! [`crate::source::Tree`], with `MODULE.bazel` parsed on the server's big-stack thread.

use bzlmod::check::{Entry, EntryKind as Kind, Files};
pub use bzlmod::check::{Problem, Report, Rule, Severity};

use super::module_file;
use crate::source::{EntryKind, SourceError, Tree};

impl Files for dyn Tree + '_ {
    type Error = SourceError;

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        Tree::read(self, path)
    }

    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, SourceError> {
        Ok(Tree::list(self, path)?.map(|entries| {
            entries
                .into_iter()
                .map(|e| Entry {
                    name: e.name,
                    kind: match e.kind {
                        EntryKind::File => Kind::File,
                        EntryKind::Dir => Kind::Dir,
                        EntryKind::Symlink => Kind::Symlink,
                        EntryKind::Other => Kind::Other,
                    },
                })
                .collect()
        }))
    }
}

/// Checks a whole registry tree.
///
/// # Errors
/// [`SourceError`] when the tree cannot be read; rule violations are in the [`Report`].
pub fn check_registry(tree: &dyn Tree) -> Result<Report, SourceError> {
    bzlmod::check::check_registry(tree, module_file::parse)
}
