//! The xtask on a swarm of three nodes (issue 19): Docker engines in network
//! namespaces of their own, joined into one swarm on a private bridge
//! (`support::multinode`). The xtask talks to node 1, the manager; the
//! data lives on node 2, so the jobs, logs and tasks it must follow run on
//! an engine it is not connected to.
//!
//! Nothing here touches the host's engine or its swarm: each test makes its
//! own swarm, and removes it, so these tests run beside the other swarm tests.

mod support;

use support::multinode::{MultiNode, Step};

#[test]
fn a_set_up_that_fails_part_way_leaves_nothing_behind() {
    for step in [Step::Bridge, Step::Namespaces, Step::Engines, Step::Registry, Step::Swarm] {
        let failed = std::panic::catch_unwind(|| MultiNode::start_failing_after(3, step));
        assert!(failed.is_err(), "the set-up did not fail after {step:?}");
        let trace = MultiNode::last_trace().expect("the harness recorded its names");
        let left = trace.leftovers();
        assert!(left.is_empty(), "after a set-up failed after {step:?}, these remain:\n{}", left.join("\n"));
    }
    // And a whole swarm once dropped (the deploy tests check it with the stack running).
    let swarm = MultiNode::start(3);
    let trace = swarm.trace();
    assert!(!trace.leftovers().is_empty(), "the trace does not see a live harness");
    drop(swarm);
    let left = trace.leftovers();
    assert!(left.is_empty(), "after the harness was dropped, these remain:\n{}", left.join("\n"));
}
