//! Token ids as the minibatch schemes read them: in memory, or memory-mapped from a prepared
//! token file in the narrowest integer type the vocabulary allows, so a corpus of any size
//! costs the page cache, not the heap.

use std::ops::Range;
use std::sync::Arc;

/// How many bytes an id takes in a prepared token file: the fewest that hold every id of the
/// vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdWidth {
    /// Vocabularies of up to 256 tokens (every character-level corpus of a Latin script).
    U8,
    /// Up to 65,536 tokens.
    U16,
    /// Up to 2^32 tokens.
    U32,
}

impl IdWidth {
    /// The narrowest width for a vocabulary of `len` tokens, `None` beyond 2^32.
    pub fn for_vocab(len: usize) -> Option<Self> {
        match len as u64 {
            0..=0x100 => Some(Self::U8),
            0x101..=0x1_0000 => Some(Self::U16),
            0x1_0001..=0x1_0000_0000 => Some(Self::U32),
            _ => None,
        }
    }

    /// Bytes per id.
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }

    /// Appends `id` in this width, little-endian.
    #[inline]
    pub(crate) fn push(self, id: u32, out: &mut Vec<u8>) {
        match self {
            Self::U8 => out.push(id as u8),
            Self::U16 => out.extend_from_slice(&(id as u16).to_le_bytes()),
            Self::U32 => out.extend_from_slice(&id.to_le_bytes()),
        }
    }
}

/// Where the ids live.
#[derive(Debug)]
enum Store {
    Heap(Vec<u32>),
    /// `len` ids of `width` starting `offset` bytes into the map (aligned to the width).
    Mapped {
        map: memmap2::Mmap,
        offset: usize,
        width: IdWidth,
        len: usize,
    },
}

/// A borrowed run of ids in one of the widths.
#[derive(Clone, Copy, Debug)]
enum Ids<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
}

/// Token ids, in text order: a cheap handle (cloning shares the ids) to ids held in memory or
/// memory-mapped from a prepared token file ([`crate::PreparedCorpus`]). Reading them costs no
/// heap memory beyond what a caller copies out.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Arc<Store>,
    range: Range<usize>,
}

impl Tokens {
    /// Ids `len` long of `width`, `offset` bytes into `map`.
    ///
    /// # Errors
    /// The map is shorter than the ids, or `offset` is not aligned to the width on this map.
    pub(crate) fn mapped(
        map: memmap2::Mmap,
        offset: usize,
        width: IdWidth,
        len: usize,
    ) -> Result<Self, String> {
        let end = len
            .checked_mul(width.bytes())
            .and_then(|b| b.checked_add(offset))
            .ok_or("the id count overflows")?;
        if end > map.len() {
            return Err(format!(
                "{} bytes of ids end past the file's {} bytes",
                end - offset,
                map.len()
            ));
        }
        let store = Store::Mapped {
            map,
            offset,
            width,
            len,
        };
        // The cast is checked once here, so `ids` below cannot fail.
        let tokens = Self {
            store: Arc::new(store),
            range: 0..len,
        };
        tokens.try_ids()?;
        Ok(tokens)
    }

    fn try_ids(&self) -> Result<Ids<'_>, String> {
        Ok(match &*self.store {
            Store::Heap(ids) => Ids::U32(&ids[self.range.clone()]),
            Store::Mapped {
                map,
                offset,
                width,
                len,
            } => {
                let bytes = &map[*offset..*offset + len * width.bytes()];
                let bad = |e: bytemuck::PodCastError| format!("ids not aligned in the file: {e:?}");
                let r = self.range.clone();
                match width {
                    IdWidth::U8 => Ids::U8(&bytes[r]),
                    IdWidth::U16 => Ids::U16(&bytemuck::try_cast_slice(bytes).map_err(bad)?[r]),
                    IdWidth::U32 => Ids::U32(&bytemuck::try_cast_slice(bytes).map_err(bad)?[r]),
                }
            }
        })
    }

    #[inline]
    fn ids(&self) -> Ids<'_> {
        self.try_ids().expect("checked when the ids were mapped")
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The width the ids are stored in (`U32` in memory).
    pub fn width(&self) -> IdWidth {
        match &*self.store {
            Store::Heap(_) => IdWidth::U32,
            Store::Mapped { width, .. } => *width,
        }
    }

    /// Whether the ids are memory-mapped from a file.
    pub fn is_mapped(&self) -> bool {
        matches!(&*self.store, Store::Mapped { .. })
    }

    /// The id at `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    #[inline]
    pub fn get(&self, index: usize) -> u32 {
        match self.ids() {
            Ids::U8(ids) => u32::from(ids[index]),
            Ids::U16(ids) => u32::from(ids[index]),
            Ids::U32(ids) => ids[index],
        }
    }

    /// The ids of `range`, sharing the same storage.
    ///
    /// # Panics
    /// If `range` reaches past `len()`.
    pub fn slice(&self, range: Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "ids {range:?} of {}",
            self.len()
        );
        Self {
            store: self.store.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        }
    }

    /// Appends the ids of `range` to `out` as `i64` (what Burn's integer tensors take).
    ///
    /// # Panics
    /// If `range` reaches past `len()`.
    #[inline]
    pub fn extend_i64(&self, range: Range<usize>, out: &mut Vec<i64>) {
        match self.ids() {
            Ids::U8(ids) => out.extend(ids[range].iter().map(|&t| i64::from(t))),
            Ids::U16(ids) => out.extend(ids[range].iter().map(|&t| i64::from(t))),
            Ids::U32(ids) => out.extend(ids[range].iter().map(|&t| i64::from(t))),
        }
    }

    /// Every id, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// The ids copied into a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        match self.ids() {
            Ids::U8(ids) => ids.iter().map(|&t| u32::from(t)).collect(),
            Ids::U16(ids) => ids.iter().map(|&t| u32::from(t)).collect(),
            Ids::U32(ids) => ids.to_vec(),
        }
    }
}

impl From<Vec<u32>> for Tokens {
    fn from(ids: Vec<u32>) -> Self {
        let len = ids.len();
        Self {
            store: Arc::new(Store::Heap(ids)),
            range: 0..len,
        }
    }
}

impl From<&[u32]> for Tokens {
    /// Copies the ids.
    fn from(ids: &[u32]) -> Self {
        ids.to_vec().into()
    }
}

impl From<&Vec<u32>> for Tokens {
    /// Copies the ids.
    fn from(ids: &Vec<u32>) -> Self {
        ids.as_slice().into()
    }
}

impl From<&Tokens> for Tokens {
    fn from(tokens: &Tokens) -> Self {
        tokens.clone()
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Tokens {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_the_narrowest_that_hold_every_id() {
        assert_eq!(IdWidth::for_vocab(28), Some(IdWidth::U8));
        assert_eq!(IdWidth::for_vocab(256), Some(IdWidth::U8));
        assert_eq!(IdWidth::for_vocab(257), Some(IdWidth::U16));
        assert_eq!(IdWidth::for_vocab(65_536), Some(IdWidth::U16));
        assert_eq!(IdWidth::for_vocab(65_537), Some(IdWidth::U32));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(IdWidth::for_vocab((1usize << 32) + 1), None);
    }

    #[test]
    fn slices_share_and_copy_out_the_ids() {
        let tokens = Tokens::from(vec![5, 6, 7, 8, 9]);
        let middle = tokens.slice(1..4);
        assert_eq!(middle.to_vec(), [6, 7, 8]);
        assert_eq!(middle.slice(1..3).get(1), 8);
        let mut out = vec![1];
        middle.extend_i64(0..2, &mut out);
        assert_eq!(out, [1, 6, 7]);
        assert_eq!(middle, Tokens::from(vec![6, 7, 8]));
        assert_eq!(tokens.width(), IdWidth::U32);
        assert!(!tokens.is_mapped());
    }
}
