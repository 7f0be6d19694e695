//! Kubernetes resource quantities (`500m`, `1.5Gi`, `1e3`) as exact numbers.
//!
//! The operator needs them to derive Redis `maxmemory` from a memory limit, to compare a request
//! with a limit, and to recognise that the API server's canonical form of a quantity (`1Gi` for
//! `1024Mi`) is the value it asked for, so that a converged child is not rewritten.

/// A quantity in billionths of its unit, exact for every suffix Kubernetes accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a Kubernetes quantity (expected a number with an optional suffix such as m, Mi, G)")]
pub struct ParseQuantityError {
    input: String,
}

impl Quantity {
    /// Parses the Kubernetes quantity syntax: an unsigned decimal number followed by a binary
    /// suffix (`Ki`…`Ei`), a decimal suffix (`n`, `u`, `m`, `k`, `M`…`E`) or an exponent (`e3`).
    pub fn parse(input: &str) -> Result<Self, ParseQuantityError> {
        let error = || ParseQuantityError { input: input.to_owned() };
        let number_end = input.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(input.len());
        let (number, suffix) = input.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(error());
        }
        // (multiplier, power of ten) applied to the mantissa.
        let (multiplier, decimal_exponent): (i128, i32) = match suffix {
            "" => (1, 0),
            "n" => (1, -9),
            "u" => (1, -6),
            "m" => (1, -3),
            "k" => (1, 3),
            "M" => (1, 6),
            "G" => (1, 9),
            "T" => (1, 12),
            "P" => (1, 15),
            "E" => (1, 18),
            "Ki" => (1 << 10, 0),
            "Mi" => (1 << 20, 0),
            "Gi" => (1 << 30, 0),
            "Ti" => (1 << 40, 0),
            "Pi" => (1 << 50, 0),
            "Ei" => (1 << 60, 0),
            other => {
                let digits = other.strip_prefix(['e', 'E']).ok_or_else(error)?;
                let value: i32 = digits.parse().map_err(|_| error())?;
                if !(-18..=18).contains(&value) {
                    return Err(error());
                }
                (1, value)
            }
        };
        if fraction.len() > 18 || whole.len() > 20 {
            return Err(error());
        }
        let digits: i128 = format!("{whole}{fraction}").parse().map_err(|_| error())?;
        // value = digits * 10^(decimal_exponent - len(fraction)) * multiplier, in nanos (+9).
        let exponent = decimal_exponent - fraction.len() as i32 + 9;
        let scaled = if exponent >= 0 {
            10i128.checked_pow(exponent as u32).and_then(|p| digits.checked_mul(p))
        } else {
            10i128.checked_pow(exponent.unsigned_abs()).map(|p| digits / p)
        };
        let nanos = scaled.and_then(|v| v.checked_mul(multiplier)).ok_or_else(error)?;
        Ok(Self { nanos })
    }

    /// The quantity rounded down to a whole number of units (bytes for memory).
    pub fn whole_units(self) -> i128 {
        self.nanos / NANOS_PER_UNIT
    }

    /// `count` times the quantity (saturating: sums of budgets never wrap).
    pub fn times(self, count: i128) -> Self {
        Self { nanos: self.nanos.saturating_mul(count) }
    }

    /// The sum of two quantities (saturating).
    pub fn plus(self, other: Self) -> Self {
        Self { nanos: self.nanos.saturating_add(other.nanos) }
    }
}

/// The shortest exact Kubernetes form: `2Gi`, `384Mi`, `350m`, `3`.
impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = self.nanos;
        if nanos % NANOS_PER_UNIT != 0 {
            return match nanos % 1_000_000 {
                0 => write!(f, "{}m", nanos / 1_000_000),
                _ => write!(f, "{nanos}n"),
            };
        }
        let units = nanos / NANOS_PER_UNIT;
        for (suffix, size) in
            [("Ei", 1i128 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)]
        {
            if units != 0 && units % size == 0 {
                return write!(f, "{}{suffix}", units / size);
            }
        }
        write!(f, "{units}")
    }
}

/// A quantity from a spec: its exact value, for sums and comparisons, and its spelling, which the
/// child objects carry unchanged (the API server keeps its own canonical form either way, and an
/// unchanged spelling keeps a converged child's applied hash stable across operator releases).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amount {
    value: Quantity,
    text: String,
}

impl Amount {
    /// Parses `text` as a Kubernetes quantity.
    pub fn parse(text: &str) -> Result<Self, ParseQuantityError> {
        Ok(Self { value: Quantity::parse(text)?, text: text.to_owned() })
    }

    /// The exact value.
    pub fn value(&self) -> Quantity {
        self.value
    }

    /// As written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The Kubernetes API form.
    pub fn to_kube(&self) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(self.text.clone())
    }
}

impl From<Quantity> for Amount {
    /// A computed quantity, spelled in its shortest exact form.
    fn from(value: Quantity) -> Self {
        Self { value, text: value.to_string() }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether two strings denote the same quantity, whatever their spelling.
pub fn same_quantity(a: &str, b: &str) -> bool {
    matches!((Quantity::parse(a), Quantity::parse(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn sums_print_in_the_shortest_exact_form() {
        assert_eq!(q("100m").times(3).plus(q("50m")).to_string(), "350m");
        assert_eq!(q("128Mi").times(2).plus(q("256Mi")).to_string(), "512Mi");
        assert_eq!(q("1Gi").times(2).to_string(), "2Gi");
        assert_eq!(q("500m").times(2).to_string(), "1");
        assert_eq!(q("1500").to_string(), "1500");
        assert_eq!(q("0").to_string(), "0");
    }

    #[test]
    fn parses_every_suffix_family() {
        assert_eq!(q("1").whole_units(), 1);
        assert_eq!(q("500m").nanos, 500_000_000);
        assert_eq!(q("1.5").nanos, 1_500_000_000);
        assert_eq!(q(".5").nanos, 500_000_000);
        assert_eq!(q("128Mi").whole_units(), 128 * 1024 * 1024);
        assert_eq!(q("1Gi").whole_units(), 1 << 30);
        assert_eq!(q("2k").whole_units(), 2000);
        assert_eq!(q("1e3").whole_units(), 1000);
        assert_eq!(q("1E-3").nanos, 1_000_000);
        assert_eq!(q("8Ei").whole_units(), 8 << 60);
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in ["", ".", "-1", "1.2.3", "Mi", "1mi", "1 Gi", "1e", "1e99", "abc", "1Gib"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn equal_values_in_different_spellings_compare_equal() {
        assert!(same_quantity("1024Mi", "1Gi"));
        assert!(same_quantity("1000m", "1"));
        assert!(same_quantity("0.5", "500m"));
        assert!(!same_quantity("1G", "1Gi"));
        assert!(!same_quantity("TCP", "TCP"));
    }

    #[test]
    fn an_amount_keeps_its_spelling_and_its_value() {
        let amount = Amount::parse("0.5").unwrap();
        assert_eq!((amount.as_str(), amount.value()), ("0.5", q("500m")));
        assert_eq!(amount.to_kube().0, "0.5");
        assert_eq!(Amount::from(q("1024Mi")).as_str(), "1Gi");
        assert!(Amount::parse("1x").is_err());
    }

    #[test]
    fn orders_by_value() {
        assert!(q("100m") < q("1"));
        assert!(q("1Gi") > q("1G"));
    }
}
