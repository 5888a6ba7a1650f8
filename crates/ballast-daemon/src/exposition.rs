//! Writing one scrape-time metric family with prometheus-client, as both daemons'
//! `/metrics` collectors do: counters keep their `_total` sample names (the encoder
//! appends the suffix to the family name), values are constants read at scrape time.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The descriptor of counter family `name` (given with its `_total`), for labelled series.
pub fn counter_family<'e>(
    encoder: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
) -> Result<MetricEncoder<'e>, std::fmt::Error> {
    let base = name.strip_suffix("_total").unwrap_or(name);
    encoder.encode_descriptor(base, help, None, MetricType::Counter)
}

/// A counter without labels.
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(counter_family(encoder, name, help)?)
}

/// A gauge without labels.
pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Two;

    impl Collector for Two {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            counter(&mut encoder, "x_requests_total", "Requests.", 3)?;
            gauge(&mut encoder, "x_held_seconds", "Held.", 1.5)
        }
    }

    #[test]
    fn a_counter_keeps_its_total_name_and_a_gauge_its_value() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Two));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .unwrap_or_else(|error| panic!("encode: {error}"));
        assert!(text.contains("# TYPE x_requests counter\n"), "{text}");
        assert!(text.contains("x_requests_total 3\n"), "{text}");
        assert!(text.contains("x_held_seconds 1.5\n"), "{text}");
    }
}
