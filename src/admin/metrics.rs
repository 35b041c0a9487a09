//! `/metrics`: the process counters in Prometheus text format.
//!
//! The hot paths keep plain atomics ([`crate::server::Metrics`],
//! [`crate::lease::LeaseStats`], the Vault client's request stats); a
//! `prometheus-client` [`Collector`] reads them at scrape time, so a
//! session never takes a lock to count something. Gauges that describe
//! live sessions (upstream connections by generation, pinned sessions by
//! reason) are computed from the session registry at scrape time.
//! Nothing secret is read: generation ids and listener names only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::AdminState;
use crate::server::SWAP_BUCKETS_US;
use crate::vault::REQUEST_BUCKETS_SECS;

/// Labels as (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// Renders every metric in the Prometheus text exposition format (0.0.4).
pub fn render(state: &Arc<AdminState>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector(Arc::clone(state))));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct ProcessCollector(Arc<AdminState>);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn counter_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

/// One histogram series: sum, count and per-bucket (non-cumulative) counts.
struct Series<L: EncodeLabelSet> {
    labels: L,
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

fn histogram_family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[Series<L>],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for s in series {
        m.encode_family(&s.labels)?
            .encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)?;
    }
    Ok(())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = &self.0;
        let m = &st.shared.metrics;
        let e = &mut e;
        gauge_family(
            e,
            "sqlease_build_info",
            "Version of this sqlease binary (always 1).",
            &[(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1.0,
            )],
        )?;
        gauge(
            e,
            "sqlease_uptime_seconds",
            "Seconds since the process started serving.",
            st.started.elapsed().as_secs_f64(),
        )?;

        // Client side.
        gauge(
            e,
            "sqlease_client_connections_open",
            "Client connections open now (handshaking or in a session).",
            load(&m.client_connections_current) as f64,
        )?;
        counter(
            e,
            "sqlease_client_connections",
            "Client connections accepted.",
            load(&m.client_connections_total),
        )?;
        counter(
            e,
            "sqlease_client_auth_failures",
            "Failed local logins (wrong user or password), COM_CHANGE_USER included.",
            load(&m.auth_failures_total),
        )?;
        counter(
            e,
            "sqlease_client_handshake_failures",
            "Handshakes that failed or timed out for another reason than a wrong password.",
            load(&m.handshake_failures_total),
        )?;
        counter(
            e,
            "sqlease_client_connections_refused",
            "Connections refused at max_connections (error 1040).",
            load(&m.connections_refused_total),
        )?;

        // Sessions, from the registry.
        let sessions = st.shared.registry.all();
        let mut per_listener: BTreeMap<String, u64> = BTreeMap::new();
        let mut upstream: BTreeMap<(String, String, u64), u64> = BTreeMap::new();
        let mut pinned: BTreeMap<&'static str, u64> = BTreeMap::new();
        for s in &sessions {
            *per_listener.entry(s.listener.name.clone()).or_default() += 1;
            if let Some(g) = s
                .generation
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                *upstream
                    .entry((
                        s.listener.name.clone(),
                        s.listener.credentials.name.clone(),
                        g.id,
                    ))
                    .or_default() += 1;
            }
            if let Some(reason) = *s.pinned.lock().unwrap_or_else(|e| e.into_inner()) {
                *pinned.entry(reason).or_default() += 1;
            }
        }
        for l in &st.listeners {
            per_listener.entry(l.name.clone()).or_default();
        }
        gauge_family(
            e,
            "sqlease_sessions",
            "Authenticated client sessions, by listener.",
            &per_listener
                .into_iter()
                .map(|(l, n)| (vec![("listener", l)], n as f64))
                .collect::<Vec<_>>(),
        )?;
        gauge_family(
            e,
            "sqlease_upstream_connections",
            "Upstream connections held by sessions, by credential generation.",
            &upstream
                .into_iter()
                .map(|((l, src, g), n)| {
                    (
                        vec![
                            ("listener", l),
                            ("source", src),
                            ("generation", g.to_string()),
                        ],
                        n as f64,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        gauge_family(
            e,
            "sqlease_sessions_pinned",
            "Sessions that cannot move to new credentials yet, by reason.",
            &pinned
                .into_iter()
                .map(|(r, n)| (vec![("reason", r.to_string())], n as f64))
                .collect::<Vec<_>>(),
        )?;

        // Swaps.
        counter(
            e,
            "sqlease_swaps",
            "Sessions moved to a newer credential generation.",
            load(&m.swaps_total),
        )?;
        counter(
            e,
            "sqlease_swaps_failed",
            "Swaps that could not be completed (the session kept its old connection or was closed).",
            load(&m.swaps_failed_total),
        )?;
        let h = &m.swap_pause;
        let mut prev = 0;
        let mut buckets = Vec::with_capacity(SWAP_BUCKETS_US.len());
        for (i, b) in SWAP_BUCKETS_US.iter().enumerate() {
            // The atomics are cumulative; the encoder wants per-bucket counts.
            let cum = h.buckets.get(i).map_or(prev, load).max(prev);
            buckets.push((*b as f64 / 1e6, cum - prev));
            prev = cum;
        }
        e.encode_descriptor(
            "sqlease_swap_pause_seconds",
            "Time a session's commands waited while it moved to new credentials.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            load(&h.sum_us) as f64 / 1e6,
            load(&h.count),
            &buckets,
            None,
        )?;
        counter(
            e,
            "sqlease_upstream_reconnects",
            "Upstream connections re-opened after the previous one was lost between commands.",
            load(&m.upstream_reconnects_total),
        )?;
        counter(
            e,
            "sqlease_upstream_lost",
            "Upstream connections lost (closed by the server or the network).",
            load(&m.upstream_lost_total),
        )?;
        counter(
            e,
            "sqlease_kills_translated",
            "KILL statements translated from proxy ids to upstream thread ids.",
            load(&m.kills_translated_total),
        )?;
        counter(
            e,
            "sqlease_deadline_closes",
            "Sessions closed at their generation's hard deadline (deadline_policy = strict).",
            load(&m.deadline_closes_total),
        )?;
        counter_family(
            e,
            "sqlease_bytes_relayed",
            "Bytes relayed in the command phase, by direction.",
            &[
                (
                    vec![("direction", "to_client".to_string())],
                    load(&m.bytes_to_client_total),
                ),
                (
                    vec![("direction", "to_upstream".to_string())],
                    load(&m.bytes_to_upstream_total),
                ),
            ],
        )?;
        counter(
            e,
            "sqlease_config_reloads",
            "Configuration reloads applied (SIGHUP).",
            load(&m.reloads_total),
        )?;
        counter(
            e,
            "sqlease_config_reload_failures",
            "Configuration reloads refused because the file had problems.",
            load(&m.reload_failures_total),
        )?;

        // Credential sources.
        let now = Instant::now();
        let mut current = Vec::new();
        let mut age = Vec::new();
        let mut deadline = Vec::new();
        let mut usable = Vec::new();
        for s in &st.sources {
            let src = || vec![("source", s.handle.name.clone())];
            let g = s.handle.current();
            current.push((src(), g.as_ref().map_or(0.0, |g| g.id as f64)));
            usable.push((
                src(),
                f64::from(u8::from(g.as_ref().is_some_and(|g| !g.expired(now)))),
            ));
            if let Some(g) = g {
                age.push((src(), now.duration_since(g.issued).as_secs_f64()));
                if let Some(left) = g.time_left(now) {
                    deadline.push((src(), left.as_secs_f64()));
                }
            }
        }
        gauge_family(
            e,
            "sqlease_generation",
            "Id of the current credential generation (0 = none), by source.",
            &current,
        )?;
        gauge_family(
            e,
            "sqlease_credentials_usable",
            "1 when the source has unexpired credentials for new upstream connections.",
            &usable,
        )?;
        gauge_family(
            e,
            "sqlease_generation_age_seconds",
            "Seconds since the current generation was obtained.",
            &age,
        )?;
        gauge_family(
            e,
            "sqlease_generation_deadline_seconds",
            "Seconds left before the current generation's credentials stop working (absent when unknown or never).",
            &deadline,
        )?;

        // Vault: lease manager counters.
        let lease: Vec<_> = st
            .sources
            .iter()
            .filter_map(|s| {
                s.lease
                    .as_ref()
                    .map(|l| (s.handle.name.clone(), l.snapshot()))
            })
            .collect();
        let per = |f: fn(&crate::lease::LeaseStatsSnapshot) -> u64| {
            lease
                .iter()
                .map(|(n, s)| (vec![("source", n.clone())], f(s)))
                .collect::<Vec<_>>()
        };
        counter_family(
            e,
            "sqlease_vault_logins",
            "Successful Vault logins.",
            &per(|s| s.logins),
        )?;
        counter_family(
            e,
            "sqlease_vault_renewals",
            "Successful token and lease renewals.",
            &per(|s| s.renewals),
        )?;
        counter_family(
            e,
            "sqlease_vault_failures",
            "Failed Vault operations (logins, credentials, renewals, revocations).",
            &per(|s| s.failures),
        )?;
        counter_family(
            e,
            "sqlease_vault_generations",
            "Credential generations (leases) obtained and published.",
            &per(|s| s.generations),
        )?;
        counter_family(
            e,
            "sqlease_vault_revocations",
            "Leases revoked (retired generations and shutdown).",
            &per(|s| s.revocations),
        )?;

        // Vault: HTTP requests by endpoint.
        let reqs = st
            .vault
            .as_ref()
            .map(|v| v.request_stats().snapshot())
            .unwrap_or_default();
        counter_family(
            e,
            "sqlease_vault_requests",
            "Vault HTTP requests, by endpoint.",
            &reqs
                .iter()
                .map(|(ep, s)| (vec![("endpoint", ep.clone())], s.requests))
                .collect::<Vec<_>>(),
        )?;
        counter_family(
            e,
            "sqlease_vault_request_errors",
            "Vault HTTP requests that failed (transport error, timeout or HTTP status >= 400), by endpoint.",
            &reqs
                .iter()
                .map(|(ep, s)| (vec![("endpoint", ep.clone())], s.errors))
                .collect::<Vec<_>>(),
        )?;
        let series: Vec<Series<Labels>> = reqs
            .iter()
            .map(|(ep, s)| Series {
                labels: vec![("endpoint", ep.clone())],
                sum: s.sum_secs,
                count: s.requests,
                buckets: REQUEST_BUCKETS_SECS
                    .iter()
                    .zip(s.buckets.iter())
                    .map(|(b, n)| (*b, *n))
                    .collect(),
            })
            .collect();
        histogram_family(
            e,
            "sqlease_vault_request_duration_seconds",
            "Latency of Vault HTTP requests, by endpoint.",
            &series,
        )?;
        Ok(())
    }
}
