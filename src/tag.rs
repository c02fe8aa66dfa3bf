//! Names of relations and pages, as PostgreSQL spells them.

use std::fmt;

/// Fork numbers (PostgreSQL's `ForkNumber`).
pub const MAIN_FORKNUM: u8 = 0;
pub const FSM_FORKNUM: u8 = 1;
pub const VISIBILITYMAP_FORKNUM: u8 = 2;
pub const INIT_FORKNUM: u8 = 3;
/// The highest valid fork number.
pub const MAX_FORKNUM: u8 = INIT_FORKNUM;

/// A relation file: PostgreSQL's `RelFileNode` (`RelFileLocator` from 16 on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelFileNode {
    pub spcnode: u32,
    pub dbnode: u32,
    pub relnode: u32,
}

/// One page: relation, fork and block number (PostgreSQL's `BufferTag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PageTag {
    pub rel: RelFileNode,
    pub forknum: u8,
    pub blkno: u32,
}

impl fmt::Display for RelFileNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spcnode, self.dbnode, self.relnode)
    }
}

impl fmt::Display for PageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fork {} blk {}", self.rel, self.forknum, self.blkno)
    }
}
