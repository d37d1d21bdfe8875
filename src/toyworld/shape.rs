//! Shape kinds and their signed distance functions (negative inside), in pixels, relative to the centre.

/// A shape kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeKind {
    Circle,
    Square,
    Triangle,
}

/// Half the side of a square of "size" `r` (squares are drawn a little smaller than their bounding circle
/// so that the three kinds look equally large).
pub const SQUARE_HALF: f32 = 0.88;

impl ShapeKind {
    pub const ALL: [ShapeKind; 3] = [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Signed distance (pixels, negative inside) of the point `(dx, dy)` from the outline of this shape of size
    /// `r` centred at the origin (`dy` grows downwards). Exact inside for every kind, which is all patterns and
    /// outlines need.
    pub fn sdf(self, dx: f32, dy: f32, r: f32) -> f32 {
        match self {
            ShapeKind::Circle => (dx * dx + dy * dy).sqrt() - r,
            ShapeKind::Square => {
                let h = SQUARE_HALF * r;
                dx.abs().max(dy.abs()) - h
            }
            ShapeKind::Triangle => {
                // Isosceles, apex up: apex (0, -r), base from (-r, r) to (r, r).
                let base = dy - r;
                // Side edges: lines through the apex and a base corner; outward normals (+-2, -1)/sqrt(5).
                let n = 5f32.sqrt();
                let right = (2.0 * dx - (dy + r)) / n;
                let left = (-2.0 * dx - (dy + r)) / n;
                base.max(right).max(left)
            }
        }
    }

    /// Radius of the largest circle inside the shape of size `r`.
    pub fn inradius(self, r: f32) -> f32 {
        match self {
            ShapeKind::Circle => r,
            ShapeKind::Square => SQUARE_HALF * r,
            // area / semi-perimeter of the apex-up triangle: 2r^2 / ((2 + 2 sqrt 5) r / 2)
            ShapeKind::Triangle => 2.0 * r / (1.0 + 5f32.sqrt()),
        }
    }

    /// How much larger than the drawn size a triangle is sampled, so that its area is comparable to the others'.
    pub fn size_boost(self) -> f32 {
        match self {
            ShapeKind::Triangle => 1.15,
            _ => 1.0,
        }
    }

    /// The half-extents `(hx, hy)` of the shape's bounding box for size `r`.
    pub fn half_extent(self, r: f32) -> (f32, f32) {
        match self {
            ShapeKind::Circle | ShapeKind::Triangle => (r, r),
            ShapeKind::Square => (SQUARE_HALF * r, SQUARE_HALF * r),
        }
    }
}
