//! Filter: drop flows whose tag is excluded.

use super::classify::Tag;

/// The `subnet` filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    excluded: [bool; 4],
}

impl Filter {
    /// From `excluded_tags`; names other than the four tags can never match and are ignored.
    pub fn new(excluded_tags: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let mut excluded = [false; 4];
        for name in excluded_tags {
            for tag in [Tag::Internal, Tag::Ingress, Tag::Egress, Tag::Other] {
                if name.as_ref() == tag.as_str() {
                    excluded[tag as usize] = true;
                }
            }
        }
        Filter { excluded }
    }

    /// Whether flows with this tag are dropped.
    pub fn is_excluded(&self, tag: Tag) -> bool {
        self.excluded[tag as usize]
    }
}
