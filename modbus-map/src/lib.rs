//! Modbus register maps and the register codec, shared by the edge's Modbus source (which reads
//! a device) and the client's Modbus server (which an HMI reads): one definition of where a point
//! sits and how its registers turn into a value and back.
//!
//! A mapped point sits in one Modbus table at an address, with a data type:
//!
//! | type | registers | notes |
//! | --- | --- | --- |
//! | `bool` | 1 bit | coils and discrete inputs only |
//! | `bit` | 1 register | one bit (`bit = 0..15`, 0 = least significant) of a holding or input register |
//! | `u16`, `i16` | 1 | |
//! | `u32`, `i32`, `f32` | 2 | `order` applies |
//! | `u64`, `i64`, `f64` | 4 | `order` applies |
//! | `string` | `length` | two ASCII bytes per register, high byte first; NULs trimmed |
//!
//! `order` names the byte order of a 32-bit value as the registers carry it: `ABCD` (big endian,
//! the Modbus default), `CDAB` (words swapped), `BADC` (bytes swapped in each word), `DCBA`
//! (little endian). For 64-bit values the same rule applies to all four words.
//! `scale` and `offset` turn the raw number into the engineering value: `value = raw × scale +
//! offset` (a scaled integer becomes a float); writes apply the inverse and refuse values out of
//! the type's range.

use pointhub_schemas::{DataType, Value};
use serde::Deserialize;

/// A mapping that cannot work: what is wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MapError(pub String);

/// Two mappings that claim the same registers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{later} ({later_at}) overlaps {earlier} ({earlier_at})")]
pub struct Overlap {
    /// The label of the mapping that starts first.
    pub earlier: String,
    /// Where it sits: `holding 10..11`.
    pub earlier_at: String,
    /// The label of the mapping that starts inside it.
    pub later: String,
    /// Where that one sits.
    pub later_at: String,
}

/// A value that does not go into a mapping's registers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A number type was given a value with no numeric form (a string or null); carries it.
    #[error("{0} is not a number")]
    NotANumber(Value),
    /// A `bool` or `bit` mapping was given a value that does not coerce to true/false.
    #[error("{0} is not true/false")]
    NotABool(Value),
    /// A `string` mapping was given a value that is not a string.
    #[error("{0} is not text")]
    NotText(Value),
    /// The raw value (after inverse scale and offset, rounded for integers) is outside the
    /// type's range or not finite.
    #[error("{value} is out of range for {ty:?} ({lo}..={hi} raw)")]
    OutOfRange {
        /// The value that was to be written.
        value: Value,
        /// The mapping's register type.
        ty: RegType,
        /// The smallest raw value the type holds.
        lo: f64,
        /// The largest raw value the type holds.
        hi: f64,
    },
    /// The text has more bytes than the mapping's `length` registers hold (two per register).
    #[error("{chars} characters do not fit {registers} registers")]
    TooLong {
        /// Characters in the text.
        chars: usize,
        /// Registers the mapping has.
        registers: usize,
    },
}

/// The Modbus tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Coils: single bits a master may read and write.
    Coil,
    /// Discrete inputs: single read-only bits.
    Discrete,
    /// Holding registers: 16-bit words a master may read and write.
    Holding,
    /// Input registers: read-only 16-bit words.
    Input,
}

impl Table {
    /// Whether the table holds single bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
    /// Whether a master may write the table: coils and holding registers only.
    pub fn writable(self) -> bool {
        matches!(self, Table::Coil | Table::Holding)
    }
    /// Most items one read may ask for.
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
    /// The table's name as configuration writes it (`coil`, `discrete`, `holding`, `input`).
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

/// How a point's value is laid out in its registers (`type` in configuration); see the crate
/// docs for the registers each takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegType {
    /// One bit of a coil or discrete input.
    Bool,
    /// One bit (`bit`, 0 = least significant) of a holding or input register.
    Bit,
    /// Unsigned 16-bit integer, one register.
    U16,
    /// Signed (two's complement) 16-bit integer, one register.
    I16,
    /// Unsigned 32-bit integer, two registers in `order`.
    U32,
    /// Signed 32-bit integer, two registers in `order`.
    I32,
    /// IEEE 754 single-precision float, two registers in `order`.
    F32,
    /// Unsigned 64-bit integer, four registers in `order`.
    U64,
    /// Signed 64-bit integer, four registers in `order`.
    I64,
    /// IEEE 754 double-precision float, four registers in `order`.
    F64,
    /// Text in `length` registers, two bytes each (high byte first); trailing NULs are trimmed.
    String,
}

/// The byte order of a 32- or 64-bit value in its registers, A being the most significant byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum Order {
    /// Big endian, most significant word first: the Modbus default.
    #[default]
    ABCD,
    /// Words swapped: least significant word first, each word big endian.
    CDAB,
    /// Bytes swapped in each word, most significant word first (also swaps a string's bytes).
    BADC,
    /// Little endian: words and bytes both reversed (also swaps a string's bytes).
    DCBA,
}

impl Order {
    fn word_swap(self) -> bool {
        matches!(self, Order::CDAB | Order::DCBA)
    }
    fn byte_swap(self) -> bool {
        matches!(self, Order::BADC | Order::DCBA)
    }
}

/// Where and how one point sits in a device's (or a server's) tables.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The table the point sits in.
    pub table: Table,
    /// The 0-based protocol address of its first register (or bit).
    pub address: u16,
    /// How the registers encode the value (`type` in configuration).
    #[serde(rename = "type")]
    pub ty: RegType,
    /// Byte order of 32- and 64-bit values; default `ABCD` (big endian).
    #[serde(default)]
    pub order: Order,
    /// Registers of a `string`.
    pub length: Option<u16>,
    /// The bit of a `bit`.
    pub bit: Option<u8>,
    /// Multiplies the raw number into the engineering value (`raw × scale + offset`); default 1.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added to the scaled raw number (`raw × scale + offset`); default 0.
    #[serde(default)]
    pub offset: f64,
}

fn one() -> f64 {
    1.0
}

impl Mapping {
    /// Registers (or bits) the point occupies.
    pub fn count(&self) -> u16 {
        match self.ty {
            RegType::Bool | RegType::Bit | RegType::U16 | RegType::I16 => 1,
            RegType::U32 | RegType::I32 | RegType::F32 => 2,
            RegType::U64 | RegType::I64 | RegType::F64 => 4,
            RegType::String => self.length.unwrap_or(1),
        }
    }

    /// The last address it occupies.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count()) - 1
    }

    fn scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }

    /// The pointhub data type of the decoded value.
    pub fn dtype(&self) -> DataType {
        match self.ty {
            RegType::Bool | RegType::Bit => DataType::Bool,
            RegType::String => DataType::String,
            RegType::F32 | RegType::F64 => DataType::Float,
            _ if self.scaled() => DataType::Float,
            RegType::U16 | RegType::U32 | RegType::U64 => DataType::UInt,
            RegType::I16 | RegType::I32 | RegType::I64 => DataType::Int,
        }
    }

    /// Checks the mapping on its own; the message says what to change.
    pub fn validate(&self) -> Result<(), MapError> {
        match (self.table.is_bits(), self.ty) {
            (true, RegType::Bool) => {}
            (true, _) => {
                return Err(MapError(format!(
                    "a {} holds single bits: use type = \"bool\"",
                    self.table.as_str()
                )))
            }
            (false, RegType::Bool) => {
                return Err(MapError(format!(
                "a {} register is 16 bits: use type = \"bit\" with bit = 0..15, or a number type",
                self.table.as_str()
            )))
            }
            _ => {}
        }
        if self.ty == RegType::Bit {
            match self.bit {
                Some(b) if b < 16 => {}
                Some(b) => return Err(MapError(format!("bit = {b}: a register has bits 0 to 15"))),
                None => return Err(MapError("type = \"bit\" needs bit = 0..15".into())),
            }
        } else if self.bit.is_some() {
            return Err(MapError("bit is only for type = \"bit\"".into()));
        }
        if self.ty == RegType::String {
            match self.length {
                Some(n) if (1..=125).contains(&n) => {}
                _ => {
                    return Err(MapError(
                        "type = \"string\" needs length = 1..125 (registers, two characters each)"
                            .into(),
                    ))
                }
            }
        } else if self.length.is_some() {
            return Err(MapError("length is only for type = \"string\"".into()));
        }
        if self.end() > 65535 {
            return Err(MapError(format!(
                "address {} with {} registers runs past 65535",
                self.address,
                self.count()
            )));
        }
        if !self.scale.is_finite() || self.scale == 0.0 || !self.offset.is_finite() {
            return Err(MapError(
                "scale must be a finite, non-zero number and offset finite".into(),
            ));
        }
        if self.scaled() && matches!(self.ty, RegType::Bool | RegType::Bit | RegType::String) {
            return Err(MapError(
                "scale and offset apply to number types only".into(),
            ));
        }
        Ok(())
    }

    fn words_to_u64(&self, regs: &[u16]) -> u64 {
        let mut words: Vec<u16> = regs.to_vec();
        if self.order.word_swap() {
            words.reverse();
        }
        words.iter().fold(0u64, |acc, w| {
            let w = if self.order.byte_swap() {
                w.swap_bytes()
            } else {
                *w
            };
            (acc << 16) | u64::from(w)
        })
    }

    fn u64_to_words(&self, mut v: u64, n: usize) -> Vec<u16> {
        let mut words = vec![0u16; n];
        for w in words.iter_mut().rev() {
            let x = (v & 0xFFFF) as u16;
            *w = if self.order.byte_swap() {
                x.swap_bytes()
            } else {
                x
            };
            v >>= 16;
        }
        if self.order.word_swap() {
            words.reverse();
        }
        words
    }

    fn engineering(&self, raw: f64, int: Value) -> Value {
        if self.scaled() {
            Value::Float(raw * self.scale + self.offset)
        } else {
            int
        }
    }

    /// Decodes registers (exactly [`Mapping::count`] of them) into a value.
    pub fn decode_regs(&self, regs: &[u16]) -> Value {
        match self.ty {
            RegType::Bool => Value::Bool(regs.first().is_some_and(|r| *r != 0)),
            RegType::Bit => Value::Bool(
                regs.first()
                    .is_some_and(|r| (r >> self.bit.unwrap_or(0)) & 1 == 1),
            ),
            RegType::U16 => {
                let v = regs.first().copied().unwrap_or(0);
                self.engineering(f64::from(v), Value::UInt(u64::from(v)))
            }
            RegType::I16 => {
                let v = regs.first().copied().unwrap_or(0) as i16;
                self.engineering(f64::from(v), Value::Int(i64::from(v)))
            }
            RegType::U32 => {
                let v = self.words_to_u64(regs) as u32;
                self.engineering(f64::from(v), Value::UInt(u64::from(v)))
            }
            RegType::I32 => {
                let v = self.words_to_u64(regs) as u32 as i32;
                self.engineering(f64::from(v), Value::Int(i64::from(v)))
            }
            RegType::F32 => {
                let v = f32::from_bits(self.words_to_u64(regs) as u32);
                Value::Float(f64::from(v) * self.scale + self.offset)
            }
            RegType::U64 => {
                let v = self.words_to_u64(regs);
                self.engineering(v as f64, Value::UInt(v))
            }
            RegType::I64 => {
                let v = self.words_to_u64(regs) as i64;
                self.engineering(v as f64, Value::Int(v))
            }
            RegType::F64 => {
                Value::Float(f64::from_bits(self.words_to_u64(regs)) * self.scale + self.offset)
            }
            RegType::String => {
                let mut bytes = Vec::with_capacity(regs.len() * 2);
                for r in regs {
                    let r = if self.order.byte_swap() {
                        r.swap_bytes()
                    } else {
                        *r
                    };
                    bytes.extend_from_slice(&r.to_be_bytes());
                }
                let s: String = String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\0')
                    .to_string();
                Value::String(s)
            }
        }
    }

    /// Encodes a value into registers (or one bit as 0/1). For `bit`, `current` is the register's
    /// present content, whose other bits are kept.
    pub fn encode(&self, value: &Value, current: Option<u16>) -> Result<Vec<u16>, EncodeError> {
        let num = || {
            value
                .as_f64()
                .ok_or_else(|| EncodeError::NotANumber(value.clone()))
        };
        let raw = || -> Result<f64, EncodeError> {
            let v = (num()? - self.offset) / self.scale;
            Ok(if matches!(self.ty, RegType::F32 | RegType::F64) {
                v
            } else {
                v.round()
            })
        };
        let range = |v: f64, lo: f64, hi: f64| {
            if v < lo || v > hi || !v.is_finite() {
                Err(EncodeError::OutOfRange {
                    value: value.clone(),
                    ty: self.ty,
                    lo,
                    hi,
                })
            } else {
                Ok(v)
            }
        };
        Ok(match self.ty {
            RegType::Bool => vec![u16::from(bool_of(value)?)],
            RegType::Bit => {
                let b = self.bit.unwrap_or(0);
                let cur = current.unwrap_or(0);
                let set = bool_of(value)?;
                vec![if set { cur | (1 << b) } else { cur & !(1 << b) }]
            }
            RegType::U16 => vec![range(raw()?, 0.0, 65535.0)? as u16],
            RegType::I16 => vec![range(raw()?, -32768.0, 32767.0)? as i16 as u16],
            RegType::U32 => self.u64_to_words(range(raw()?, 0.0, 4294967295.0)? as u64, 2),
            RegType::I32 => self.u64_to_words(
                range(raw()?, -2147483648.0, 2147483647.0)? as i32 as u32 as u64,
                2,
            ),
            RegType::F32 => self.u64_to_words(u64::from((raw()? as f32).to_bits()), 2),
            RegType::U64 => match (value, self.scaled()) {
                (Value::UInt(u), false) => self.u64_to_words(*u, 4),
                (Value::Int(i), false) if *i >= 0 => self.u64_to_words(*i as u64, 4),
                _ => self.u64_to_words(range(raw()?, 0.0, 1.8e19)? as u64, 4),
            },
            RegType::I64 => match (value, self.scaled()) {
                (Value::Int(i), false) => self.u64_to_words(*i as u64, 4),
                _ => self.u64_to_words(range(raw()?, -9.2e18, 9.2e18)? as i64 as u64, 4),
            },
            RegType::F64 => self.u64_to_words(raw()?.to_bits(), 4),
            RegType::String => {
                let Value::String(s) = value else {
                    return Err(EncodeError::NotText(value.clone()));
                };
                let n = usize::from(self.count());
                if s.len() > n * 2 {
                    return Err(EncodeError::TooLong {
                        chars: s.len(),
                        registers: n,
                    });
                }
                let mut bytes = s.as_bytes().to_vec();
                bytes.resize(n * 2, 0);
                bytes
                    .chunks(2)
                    .map(|c| {
                        let r = u16::from_be_bytes([c[0], c[1]]);
                        if self.order.byte_swap() {
                            r.swap_bytes()
                        } else {
                            r
                        }
                    })
                    .collect()
            }
        })
    }
}

fn bool_of(v: &Value) -> Result<bool, EncodeError> {
    match v.coerce(DataType::Bool) {
        Ok(Value::Bool(b)) => Ok(b),
        _ => Err(EncodeError::NotABool(v.clone())),
    }
}

/// One entry of a register map in a configuration file: a point and where it sits.
///
/// On an edge, `name` is the point's name below `<namespace>/<source>/`; on a client's Modbus
/// server it is the full point name.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapEntry {
    /// The point's name: below `<namespace>/<source>/` on an edge, the full name on a client.
    pub name: String,
    /// The table the point sits in.
    pub table: Table,
    /// The 0-based protocol address of its first register (or bit).
    pub address: u16,
    /// How the registers encode the value (`type` in configuration).
    #[serde(rename = "type")]
    pub ty: RegType,
    /// Byte order of 32- and 64-bit values; default `ABCD` (big endian).
    #[serde(default)]
    pub order: Order,
    /// Registers of a `string` (1 to 125, two characters each); only for that type.
    pub length: Option<u16>,
    /// The bit (0 to 15, 0 = least significant) of a `bit`; only for that type.
    pub bit: Option<u8>,
    /// Multiplies the raw number into the engineering value (`raw × scale + offset`); default 1.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added to the scaled raw number (`raw × scale + offset`); default 0.
    #[serde(default)]
    pub offset: f64,
    /// The engineering unit (`bar`), carried to clients in the point's definition (edge).
    pub unit: Option<String>,
    /// A human description, carried to clients in the point's definition (edge).
    pub description: Option<String>,
    /// Report a change only when it exceeds this much (edge).
    pub deadband: Option<f64>,
    /// … or this percentage of the last reported value (edge).
    pub deadband_percent: Option<f64>,
    /// The poll group (edge); default `default`.
    pub group: Option<String>,
    /// Clients may write it (edge: holding registers and coils only).
    #[serde(default)]
    pub writable: bool,
    /// A holding register that carries the point's quality (client server): the top 16 bits of
    /// its OPC UA status code (0 = Good, 0x408F = stale with last value, 0x80xx = bad).
    pub quality_register: Option<u16>,
}

impl MapEntry {
    /// The entry's register part: where the point sits and how it is encoded.
    pub fn mapping(&self) -> Mapping {
        Mapping {
            table: self.table,
            address: self.address,
            ty: self.ty,
            order: self.order,
            length: self.length,
            bit: self.bit,
            scale: self.scale,
            offset: self.offset,
        }
    }

    /// Checks what both ends share: the mapping itself, writability, deadbands.
    pub fn validate(&self) -> Result<(), MapError> {
        self.mapping().validate()?;
        if self.writable && !self.table.writable() {
            return Err(MapError(format!(
                "a {} cannot be written: only holding registers and coils",
                self.table.as_str()
            )));
        }
        for d in [self.deadband, self.deadband_percent].into_iter().flatten() {
            if !(d.is_finite() && d >= 0.0) {
                return Err(MapError(
                    "deadband and deadband_percent must be zero or more".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Checks that no two mappings of one table overlap (bits of one register may share it).
/// `items` are (label, mapping); the error names both.
pub fn check_overlaps(items: &[(String, &Mapping)]) -> Result<(), Overlap> {
    let mut sorted: Vec<&(String, &Mapping)> = items.iter().collect();
    sorted.sort_by_key(|(_, m)| (m.table, m.address));
    for pair in sorted.windows(2) {
        let (la, a) = pair[0];
        let (lb, b) = pair[1];
        if a.table != b.table || u32::from(b.address) > a.end() {
            continue;
        }
        let bits = a.ty == RegType::Bit
            && b.ty == RegType::Bit
            && a.address == b.address
            && a.bit != b.bit;
        if !bits {
            return Err(Overlap {
                earlier: la.clone(),
                earlier_at: format!("{} {}..{}", a.table.as_str(), a.address, a.end()),
                later: lb.clone(),
                later_at: format!("{} {}..{}", b.table.as_str(), b.address, b.end()),
            });
        }
    }
    Ok(())
}

/// The 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(table: Table, address: u16, ty: RegType, order: Order) -> Mapping {
        Mapping {
            table,
            address,
            ty,
            order,
            length: None,
            bit: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    #[test]
    fn orders_round_trip_and_match_known_layouts() {
        // 123.456f32 = 0x42F6E979
        let cases = [
            (Order::ABCD, [0x42F6, 0xE979]),
            (Order::CDAB, [0xE979, 0x42F6]),
            (Order::BADC, [0xF642, 0x79E9]),
            (Order::DCBA, [0x79E9, 0xF642]),
        ];
        for (o, regs) in cases {
            let map = m(Table::Holding, 0, RegType::F32, o);
            let v = map.decode_regs(&regs);
            assert!(
                matches!(v, Value::Float(f) if (f - 123.456).abs() < 1e-4),
                "{o:?}: {v:?}"
            );
            assert_eq!(
                map.encode(&v, None).expect("encodes"),
                regs.to_vec(),
                "{o:?}"
            );
        }
        let map = m(Table::Holding, 0, RegType::I64, Order::CDAB);
        let regs = map
            .encode(&Value::Int(-5_000_000_000), None)
            .expect("encodes");
        assert_eq!(map.decode_regs(&regs), Value::Int(-5_000_000_000));
    }

    #[test]
    fn scale_offset_bits_strings() {
        let mut map = m(Table::Input, 0, RegType::I16, Order::ABCD);
        map.scale = 0.1;
        map.offset = -10.0;
        assert_eq!(map.decode_regs(&[(-5i16) as u16]), Value::Float(-10.5));
        assert_eq!(
            map.encode(&Value::Float(-10.5), None).expect("encodes"),
            vec![(-5i16) as u16]
        );
        assert!(matches!(
            map.encode(&Value::Float(1e9), None),
            Err(EncodeError::OutOfRange { .. })
        ));
        let mut bit = m(Table::Holding, 3, RegType::Bit, Order::ABCD);
        bit.bit = Some(4);
        assert_eq!(bit.decode_regs(&[0b1_0000]), Value::Bool(true));
        assert_eq!(
            bit.encode(&Value::Bool(false), Some(0b1_0001))
                .expect("encodes"),
            vec![0b1]
        );
        let mut s = m(Table::Holding, 10, RegType::String, Order::ABCD);
        s.length = Some(3);
        let regs = s
            .encode(&Value::String("PUMP".into()), None)
            .expect("encodes");
        assert_eq!(regs.len(), 3);
        assert_eq!(s.decode_regs(&regs), Value::String("PUMP".into()));
    }

    #[test]
    fn validation_says_what_to_change() {
        assert!(m(Table::Holding, 0, RegType::Bool, Order::ABCD)
            .validate()
            .expect_err("bool in a register")
            .to_string()
            .contains("bit"));
        assert!(m(Table::Coil, 0, RegType::U16, Order::ABCD)
            .validate()
            .is_err());
        assert!(m(Table::Holding, 65535, RegType::U32, Order::ABCD)
            .validate()
            .expect_err("past the end")
            .to_string()
            .contains("65535"));
        let a = m(Table::Holding, 10, RegType::U32, Order::ABCD);
        let b = m(Table::Holding, 11, RegType::U16, Order::ABCD);
        let c = m(Table::Input, 11, RegType::U16, Order::ABCD);
        let e = check_overlaps(&[("a".into(), &a), ("b".into(), &b)]).expect_err("overlap");
        assert_eq!((e.earlier.as_str(), e.later.as_str()), ("a", "b"));
        assert!(
            e.to_string()
                .contains("b (holding 11..11) overlaps a (holding 10..11)"),
            "{e}"
        );
        check_overlaps(&[("a".into(), &a), ("c".into(), &c)]).expect("other table");
    }
}
