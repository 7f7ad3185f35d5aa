//! The host/kernel boundary: each kernel's `Params` is a Rust mirror of its WGSL
//! uniform block, declared with [`uniform!`](crate::uniform) so that its layout
//! (member names, offsets, sizes) is known and the shader test can hold it
//! against the WGSL struct as naga reflects it (`tests/shaders.rs`).

/// One scalar of a uniform block as the Rust mirror lays it out. Array fields
/// (`q_s: [u32; 4]`) stand for consecutive WGSL members whose names start with
/// the field's (`q_sb, q_sh, q_sn, q_sd`); nested blocks are flattened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The Rust field's name (for an array field, the prefix of the WGSL names).
    pub name: &'static str,
    /// Byte offset from the start of the block.
    pub offset: usize,
    /// Bytes (4 for every scalar the blocks use: `u32`, `i32`, `f32`).
    pub size: usize,
    /// Part of an array field (the WGSL name extends `name`).
    pub array: bool,
}

/// A value that occupies members of a uniform block.
pub trait Field {
    /// Appends this field's scalars, at byte `offset`, named `name`.
    fn flatten(name: &'static str, offset: usize, out: &mut Vec<Member>);
}

macro_rules! scalar_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn flatten(name: &'static str, offset: usize, out: &mut Vec<Member>) {
                out.push(Member { name, offset, size: 4, array: false });
            }
        }
    )*};
}
scalar_field!(u32, i32, f32);

impl<const N: usize> Field for [u32; N] {
    fn flatten(name: &'static str, offset: usize, out: &mut Vec<Member>) {
        for i in 0..N {
            out.push(Member {
                name,
                offset: offset + 4 * i,
                size: 4,
                array: true,
            });
        }
    }
}

/// A uniform block's layout: its scalars in order, and its size in bytes.
pub fn layout<T: Field>() -> (Vec<Member>, usize) {
    let mut out = Vec::new();
    T::flatten("", 0, &mut out);
    (out, std::mem::size_of::<T>())
}

/// Declares a `#[repr(C)]`, `Pod` uniform block whose layout [`layout`] reports.
#[macro_export]
#[doc(hidden)]
macro_rules! uniform {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($(#[$fm])* $fvis $field: $ty),* }

        impl $crate::kernels::uniform::Field for $name {
            fn flatten(
                _name: &'static str,
                offset: usize,
                out: &mut Vec<$crate::kernels::uniform::Member>,
            ) {
                $(<$ty as $crate::kernels::uniform::Field>::flatten(
                    stringify!($field),
                    offset + std::mem::offset_of!($name, $field),
                    out,
                );)*
            }
        }
    };
}
