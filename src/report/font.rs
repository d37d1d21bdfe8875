//! The font of plots and grids: DejaVu Sans, embedded in the binary (`assets/fonts/`, Bitstream Vera
//! licence), registered with plotters' ab_glyph text renderer, so text renders without system fonts.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name plots and grids use.
pub const FAMILY: &str = "sans-serif";

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the embedded font (once per process) for every style plotters may ask for.
pub fn ensure() -> Result<(), String> {
    REGISTERED
        .get_or_init(|| {
            for style in [
                FontStyle::Normal,
                FontStyle::Bold,
                FontStyle::Italic,
                FontStyle::Oblique,
            ] {
                plotters::style::register_font(FAMILY, style, FONT)
                    .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())?;
            }
            Ok(())
        })
        .clone()
}
