//! Fuzz the CNI plugin's decoder: any standard input must give either a
//! decoded request or a CNI error with a spec code (never a panic), and a
//! decoded configuration must encode and decode back to itself (unknown
//! keys included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use symroute_cni::types;

fuzz_target!(|data: &[u8]| {
    match types::decode(data) {
        Ok(d) => {
            let again = serde_json::to_vec(&d.conf).expect("a decoded configuration encodes");
            let d2 = types::decode(&again).expect("an encoded configuration decodes");
            assert_eq!(d, d2, "round trip changed the request");
            if let Some(prev) = &d.prev {
                for ifname in ["eth0", "net1"] {
                    let _ = prev.ips_for(ifname, Some("/proc/1/ns/net"));
                }
            }
        }
        Err(e) => {
            assert!(
                matches!(e.code, 1 | 4 | 5 | 6 | 7),
                "unexpected code {} for a decode error: {e}",
                e.code
            );
            let _ = e.to_json(&types::request_version(data));
        }
    }
});
