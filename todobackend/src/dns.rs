//! Name resolution for every name the service connects to: the database
//! host (store/postgres/client.rs) and the host of a check's URL (client.rs).
//!
//! The release binary is linked statically against glibc, whose
//! `getaddrinfo` needs NSS modules that a `FROM scratch` image does not
//! have, so the system resolver cannot be used. hickory-resolver does what
//! a libc resolver does, from the same files: `/etc/hosts` first, then the
//! nameservers of `/etc/resolv.conf` (in a Docker container, the engine's
//! embedded DNS at 127.0.0.11, which knows the swarm's service names) with
//! its `search` domains, `ndots`, `timeout` and `attempts`, over UDP with a
//! fallback to TCP. Callers run a lookup inside their own connect timeout.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};

/// The files a resolver reads; tests give their own.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOSTS: &str = "/etc/hosts";

/// A resolver made from a resolv.conf and a hosts file. Made anew for each
/// connect (both files are small and connects are rare: the pool keeps its
/// connections), so a changed resolv.conf is read and no answer outlives
/// the name's move to another node.
pub struct Resolver {
    inner: TokioResolver,
    hosts: Arc<Hosts>,
}

impl Resolver {
    /// From `/etc/resolv.conf` and `/etc/hosts`. A missing file is empty:
    /// without nameservers, only IP literals, `localhost` and the hosts
    /// file resolve.
    pub fn from_system() -> Result<Resolver, String> {
        let resolv_conf = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
        let hosts = std::fs::read_to_string(HOSTS).unwrap_or_default();
        Resolver::from_files(&resolv_conf, &hosts)
    }

    /// From the text of a resolv.conf and of a hosts file.
    pub fn from_files(resolv_conf: &str, hosts: &str) -> Result<Resolver, String> {
        let (config, mut options) = if resolv_conf.lines().any(|line| line.trim_start().starts_with("nameserver")) {
            hickory_resolver::system_conf::parse_resolv_conf(resolv_conf)
                .map_err(|e| format!("{RESOLV_CONF} cannot be read as a resolver configuration: {e}"))?
        } else {
            (ResolverConfig::from_parts(None, Vec::new(), Vec::new()), ResolverOpts::default())
        };
        // The hosts file given here, not the one hickory would read itself.
        options.use_hosts_file = ResolveHosts::Never;
        // No answer is kept past a few seconds: the resolver is made per
        // connect anyway, and a swarm task's address changes when it moves.
        options.positive_max_ttl = Some(Duration::from_secs(5));
        options.negative_max_ttl = Some(Duration::from_secs(1));
        let mut table = Hosts::default();
        table.read_hosts_conf(hosts.as_bytes()).map_err(|e| format!("{HOSTS} cannot be read: {e}"))?;
        let mut inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| format!("cannot set up name resolution: {e}"))?;
        let hosts = Arc::new(table);
        inner.set_hosts(Arc::clone(&hosts));
        Ok(Resolver { inner, hosts })
    }

    /// The addresses of `host`: an IP literal (IPv6 with or without
    /// brackets) as it is, else the hosts file, else DNS. Must run on a
    /// tokio runtime with I/O and time enabled.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // A name the hosts file holds is answered from it alone, both
        // families, as the C library's `files` before `dns` does: hickory asks
        // DNS for the family the file does not list, and a name pinned to an
        // IPv4 address would get a DNS server's IPv6 one beside it.
        let pinned = self.pinned_in_hosts_file(bare);
        if !pinned.is_empty() {
            return Ok(pinned);
        }
        match self.inner.lookup_ip(bare).await {
            Ok(found) => {
                let found: Vec<IpAddr> = found.iter().collect();
                if found.is_empty() { Err(format!("cannot resolve {bare}: no address")) } else { Ok(found) }
            }
            Err(e) if e.is_no_records_found() => Err(format!("cannot resolve {bare}: no such name")),
            Err(e) => Err(format!("cannot resolve {bare}: {e}")),
        }
    }
}

impl Resolver {
    fn pinned_in_hosts_file(&self, name: &str) -> Vec<IpAddr> {
        let Ok(name) = Name::from_str(name) else { return Vec::new() };
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|record_type| self.hosts.lookup_static_host(&Query::query(name.clone(), record_type)))
            .flat_map(|lookup| lookup.answers().iter().filter_map(|record| record.data.ip_addr()).collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(resolver: &Resolver, host: &str) -> Result<Vec<IpAddr>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(resolver.lookup(host))
    }

    #[test]
    fn literals_localhost_and_the_hosts_file_need_no_nameserver() {
        let resolver = Resolver::from_files("", "10.1.2.3 db db.local # the database\n").unwrap();
        assert_eq!(lookup(&resolver, "127.0.0.1").unwrap(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(lookup(&resolver, "[::1]").unwrap(), vec!["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(lookup(&resolver, "DB").unwrap(), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(lookup(&resolver, "localhost").unwrap().contains(&"127.0.0.1".parse().unwrap()));
        let err = lookup(&resolver, "elsewhere").unwrap_err();
        assert!(err.starts_with("cannot resolve elsewhere"), "{err}");
    }
}
