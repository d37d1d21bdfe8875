//! The colours of the toyworld: four base colours any object can have, three that belong to the personal
//! concepts only, the two backgrounds, and the dark accent of patterns.

/// An object colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    /// The `dots` concept's colour (never used by plain scenes).
    Orange,
    /// The `stripes` concept's colour.
    Purple,
    /// The `rings` concept's colour.
    Teal,
}

impl Colour {
    /// Every colour, base colours first.
    pub const ALL: [Colour; 7] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Orange,
        Colour::Purple,
        Colour::Teal,
    ];

    /// The colours of plain scenes (captions name them).
    pub const BASE: [Colour; 4] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Orange => "orange",
            Colour::Purple => "purple",
            Colour::Teal => "teal",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// sRGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 170, 40],
            Colour::Blue => [40, 70, 230],
            Colour::Yellow => [240, 205, 20],
            Colour::Orange => [255, 135, 0],
            Colour::Purple => [150, 40, 200],
            Colour::Teal => [0, 165, 165],
        }
    }
}

/// A background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Background {
    /// The default, not named in captions.
    White,
    /// Named in captions: "... on a grey background".
    Grey,
}

impl Background {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::White => [244, 244, 240],
            Background::Grey => [165, 165, 165],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Background::White => "white",
            Background::Grey => "grey",
        }
    }
}

/// The dark colour of pattern accents (dots, stripes, rings).
pub const ACCENT: [u8; 3] = [28, 28, 32];

/// A pixel is "dark" (an accent, not an object colour) when its brightest channel is below this.
pub const DARK_MAX_CHANNEL: u8 = 95;

/// Whether the pixel `p` is dark (see [`DARK_MAX_CHANNEL`]).
pub fn is_dark(p: [u8; 3]) -> bool {
    p[0].max(p[1]).max(p[2]) < DARK_MAX_CHANNEL
}
