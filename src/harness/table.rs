//! Tables as polars DataFrames: building them column by column, Parquet and CSV written atomically,
//! and typed column access with errors that name the file and the column.

use std::io::Cursor;
use std::path::Path;

use polars::prelude::*;

use super::error::{HarnessError, HarnessResult};
use crate::latent_io::write_atomic;

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Str(Vec<Option<String>>),
    F64(Vec<Option<f64>>),
    I64(Vec<Option<i64>>),
    U64(Vec<Option<u64>>),
    Bool(Vec<Option<bool>>),
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Str(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::U64(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn into_column(self, name: &str) -> Column {
        let n = PlSmallStr::from(name);
        match self {
            ColumnData::Str(v) => Column::new(n, v),
            ColumnData::F64(v) => Column::new(n, v),
            ColumnData::I64(v) => Column::new(n, v),
            ColumnData::U64(v) => Column::new(n, v),
            ColumnData::Bool(v) => Column::new(n, v),
        }
    }
}

/// Builds a DataFrame column by column.
#[derive(Debug, Default)]
pub struct TableBuilder {
    columns: Vec<(String, ColumnData)>,
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: &str, data: ColumnData) -> &mut Self {
        self.columns.push((name.to_string(), data));
        self
    }

    pub fn str(&mut self, name: &str, v: Vec<Option<String>>) -> &mut Self {
        self.push(name, ColumnData::Str(v))
    }

    pub fn f64(&mut self, name: &str, v: Vec<Option<f64>>) -> &mut Self {
        self.push(name, ColumnData::F64(v))
    }

    pub fn i64(&mut self, name: &str, v: Vec<Option<i64>>) -> &mut Self {
        self.push(name, ColumnData::I64(v))
    }

    pub fn u64(&mut self, name: &str, v: Vec<Option<u64>>) -> &mut Self {
        self.push(name, ColumnData::U64(v))
    }

    /// The DataFrame (`path` names the table in errors).
    pub fn build(self, path: &Path) -> HarnessResult<DataFrame> {
        let height = self.columns.first().map(|(_, c)| c.len()).unwrap_or(0);
        let cols: Vec<Column> = self
            .columns
            .into_iter()
            .map(|(n, c)| c.into_column(&n))
            .collect();
        DataFrame::new(height, cols).map_err(|e| HarnessError::table(path, e))
    }
}

/// Writes `df` as Parquet (uncompressed, plain types readable by pyarrow/pandas), atomically.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> HarnessResult<()> {
    let mut buf = Cursor::new(Vec::new());
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Uncompressed)
        .finish(df)
        .map_err(|e| HarnessError::table(path, e))?;
    write_atomic(path, buf.get_ref()).map_err(HarnessError::from)
}

/// Reads a Parquet file.
pub fn read_parquet(path: &Path) -> HarnessResult<DataFrame> {
    let f = std::fs::File::open(path).map_err(|e| HarnessError::io(path, e))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| HarnessError::table(path, e))
}

/// Writes `df` as CSV with a header, atomically.
pub fn write_csv(df: &mut DataFrame, path: &Path) -> HarnessResult<()> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf)
        .include_header(true)
        .finish(df)
        .map_err(|e| HarnessError::table(path, e))?;
    write_atomic(path, &buf).map_err(HarnessError::from)
}

fn column<'a>(df: &'a DataFrame, name: &str, path: &Path) -> HarnessResult<&'a Column> {
    df.column(name).map_err(|_| {
        HarnessError::table(
            path,
            format!("no column `{name}` (is this table from another version?)"),
        )
    })
}

/// A string column.
pub fn col_str(df: &DataFrame, name: &str, path: &Path) -> HarnessResult<Vec<Option<String>>> {
    let c = column(df, name, path)?;
    let s = c
        .str()
        .map_err(|e| HarnessError::table(path, format!("column `{name}`: {e}")))?;
    Ok((0..s.len()).map(|i| s.get(i).map(str::to_string)).collect())
}

/// A numeric column as f64 (integers converted).
pub fn col_f64(df: &DataFrame, name: &str, path: &Path) -> HarnessResult<Vec<Option<f64>>> {
    let c = column(df, name, path)?;
    let c = c
        .cast(&DataType::Float64)
        .map_err(|e| HarnessError::table(path, format!("column `{name}`: {e}")))?;
    let s = c
        .f64()
        .map_err(|e| HarnessError::table(path, format!("column `{name}`: {e}")))?;
    Ok((0..s.len()).map(|i| s.get(i)).collect())
}

/// An unsigned integer column.
pub fn col_u64(df: &DataFrame, name: &str, path: &Path) -> HarnessResult<Vec<Option<u64>>> {
    let c = column(df, name, path)?;
    let c = c
        .cast(&DataType::UInt64)
        .map_err(|e| HarnessError::table(path, format!("column `{name}`: {e}")))?;
    let s = c
        .u64()
        .map_err(|e| HarnessError::table(path, format!("column `{name}`: {e}")))?;
    Ok((0..s.len()).map(|i| s.get(i)).collect())
}

/// Whether `df` has a column `name`.
pub fn has_column(df: &DataFrame, name: &str) -> bool {
    df.column(name).is_ok()
}
