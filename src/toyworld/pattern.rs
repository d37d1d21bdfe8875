//! Surface patterns: dark accents drawn inside an object (dots, horizontal stripes, an inner ring that follows
//! the outline), kept clear of the outline so the silhouette stays intact.

use super::shape::ShapeKind;

/// An object's surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    Plain,
    Dots,
    Stripes,
    Rings,
}

impl Pattern {
    pub const ALL: [Pattern; 4] = [
        Pattern::Plain,
        Pattern::Dots,
        Pattern::Stripes,
        Pattern::Rings,
    ];

    /// The adjective captions use (`None` for plain objects, which captions do not qualify).
    pub fn adjective(self) -> Option<&'static str> {
        match self {
            Pattern::Plain => None,
            Pattern::Dots => Some("dotted"),
            Pattern::Stripes => Some("striped"),
            Pattern::Rings => Some("ringed"),
        }
    }

    pub fn from_adjective(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.adjective() == Some(word))
    }

    pub fn name(self) -> &'static str {
        match self {
            Pattern::Plain => "plain",
            Pattern::Dots => "dots",
            Pattern::Stripes => "stripes",
            Pattern::Rings => "rings",
        }
    }

    /// Whether the point `(dx, dy)` (relative to the object centre, inside the shape) is a dark accent.
    pub fn is_accent(self, shape: ShapeKind, dx: f32, dy: f32, r: f32) -> bool {
        match self {
            Pattern::Plain => false,
            Pattern::Dots => {
                let (dot, spacing) = dot_geometry(r);
                // Nearest grid point of a lattice centred on the object.
                let gx = (dx / spacing).round() * spacing;
                let gy = (dy / spacing).round() * spacing;
                // Only dots that lie wholly inside, one pixel clear of the outline.
                if shape.sdf(gx, gy, r) > -(dot + 1.0) {
                    return false;
                }
                let (ex, ey) = (dx - gx, dy - gy);
                ex * ex + ey * ey <= dot * dot
            }
            Pattern::Stripes => {
                let period = stripe_period(r);
                if shape.sdf(dx, dy, r) > -1.6 {
                    return false;
                }
                // Dark bands of half the period, the middle one centred on the object.
                let phase = (dy / period + 0.25).rem_euclid(1.0);
                phase < 0.5
            }
            Pattern::Rings => {
                let (depth, half_width) = ring_geometry(shape, r);
                let d = -shape.sdf(dx, dy, r);
                (d - depth).abs() <= half_width
            }
        }
    }
}

/// Dot radius and lattice spacing for an object of size `r`.
pub fn dot_geometry(r: f32) -> (f32, f32) {
    let dot = (0.17 * r).clamp(1.6, 2.6);
    (dot, 3.3 * dot)
}

/// Stripe period for an object of size `r`.
pub fn stripe_period(r: f32) -> f32 {
    (0.5 * r).clamp(5.0, 7.0)
}

/// Depth below the outline and half-width of the inner ring of a `shape` of size `r` (proportional to the
/// shape's inradius, so that the ring always encloses some of the object's colour).
pub fn ring_geometry(shape: ShapeKind, r: f32) -> (f32, f32) {
    let inradius = shape.inradius(r);
    (0.45 * inradius, (0.12 * inradius).clamp(1.0, 1.7))
}
