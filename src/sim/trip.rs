//! The simulated driver and the trip it makes while the order is
//! `in_transit`: a straight line of [`TRIP_METRES`] from the store's point
//! to the drop-off, reported as a fix every [`FIX_EVERY`] (scaled by the
//! run's speed), the last one at the drop-off just before `delivered`.
//!
//! Everything here follows from the order id alone, so a run and its
//! resumption (or another instance taking it over) pick the same driver
//! and the same route. Pure: no I/O; the simulator sends the fixes.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::fulfillment::DriverDetails;
use crate::domain::OrderId;

/// Where every simulated trip starts: the stores have no coordinates, so
/// one point stands for them all (lower Manhattan, like the API examples).
const STORE_POINT: Point = Point {
    latitude: 40.7128,
    longitude: -74.006,
};

/// How far the drop-off is from the store, in a straight line.
pub const TRIP_METRES: f64 = 1_200.0;

/// How often (at real time) the simulated driver reports a fix: 36 steps of
/// about 33 m over `in_transit`'s 9 minutes.
pub const FIX_EVERY: Duration = Duration::from_secs(15);

/// How precise the simulated fixes claim to be, in metres.
pub const FIX_ACCURACY: f64 = 5.0;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;

/// A position on the map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Point {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

/// The simulated driver's way from the store to the drop-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Trip {
    /// The first fix, sent as the order goes `in_transit`.
    pub from: Point,
    /// The last fix, sent just before the order is `delivered`.
    pub to: Point,
    /// How many fixes the whole trip sends.
    pub fixes: u32,
    /// Seconds between two fixes, at the run's speed.
    pub every_seconds: f64,
}

/// A stable hash of the order id (FNV-1a): the same on every build and
/// every instance, unlike `std`'s hasher.
fn seed(id: &OrderId) -> u64 {
    id.as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The driver the simulator assigns to order `id`.
pub fn driver(id: &OrderId) -> DriverDetails {
    const NAMES: [&str; 6] = [
        "Sam Rivera",
        "Alex Chen",
        "Priya Nair",
        "Jordan Blake",
        "Maya Okafor",
        "Luis Ortega",
    ];
    let seed = seed(id);
    let number = seed % 100;
    // Invariant: the modulus keeps the index in range.
    let name = NAMES[(seed / 100 % NAMES.len() as u64) as usize];
    DriverDetails {
        driver_id: format!("sim-driver-{number:02}"),
        name: name.to_owned(),
        // 555-0100 to 555-0199 are reserved for fiction.
        phone: format!("+1-555-01{number:02}"),
        vehicle_type: "bike".to_owned(),
        vehicle_number: None,
        photo_url: None,
    }
}

/// The trip for order `id` when `in_transit` lasts `lasts` at the run's
/// speed: the bearing comes from the id, so orders fan out around the store.
pub fn trip(id: &OrderId, lasts: Duration, every: Duration) -> Trip {
    let bearing = ((seed(id) % 360) as f64).to_radians();
    let north = TRIP_METRES * bearing.cos() / METRES_PER_DEGREE;
    let east =
        TRIP_METRES * bearing.sin() / (METRES_PER_DEGREE * STORE_POINT.latitude.to_radians().cos());
    let steps = steps(lasts, every);
    Trip {
        from: STORE_POINT,
        to: Point {
            latitude: STORE_POINT.latitude + north,
            longitude: STORE_POINT.longitude + east,
        },
        fixes: steps + 1,
        every_seconds: lasts.as_secs_f64() / f64::from(steps),
    }
}

/// How many legs a trip lasting `lasts` has with a fix every `every`: at
/// least one, so the drop-off is always reported.
fn steps(lasts: Duration, every: Duration) -> u32 {
    let steps = lasts.as_secs_f64() / every.as_secs_f64();
    // Bounded: the real trip has 36 legs; the cap only guards odd input.
    steps.floor().clamp(1.0, 10_000.0) as u32
}

impl Trip {
    /// The `k`th fix's position, from the store (0) to the drop-off
    /// (`fixes - 1`).
    pub fn point(&self, k: u32) -> Point {
        let legs = f64::from(self.fixes.saturating_sub(1).max(1));
        let done = f64::from(k.min(self.fixes - 1)) / legs;
        Point {
            latitude: self.from.latitude + (self.to.latitude - self.from.latitude) * done,
            longitude: self.from.longitude + (self.to.longitude - self.from.longitude) * done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OrderId {
        s.parse().unwrap()
    }

    /// Metres between two nearby points (flat-earth approximation).
    fn metres(a: Point, b: Point) -> f64 {
        let north = (b.latitude - a.latitude) * METRES_PER_DEGREE;
        let east = (b.longitude - a.longitude) * METRES_PER_DEGREE * a.latitude.to_radians().cos();
        north.hypot(east)
    }

    #[test]
    fn the_trip_is_a_kilometre_or_so_in_small_even_steps_ending_at_the_drop_off() {
        let trip = trip(&id("101"), Duration::from_secs(9 * 60), FIX_EVERY);
        assert_eq!(trip.fixes, 37);
        assert_eq!(trip.every_seconds, 15.0);
        assert_eq!(trip.point(0), trip.from);
        assert_eq!(trip.point(36), trip.to);
        assert!((metres(trip.from, trip.to) - TRIP_METRES).abs() < 1.0);
        for k in 0..36 {
            let leg = metres(trip.point(k), trip.point(k + 1));
            assert!((leg - TRIP_METRES / 36.0).abs() < 0.5, "{k}: {leg}");
        }
        // Scaled, the trip keeps its shape.
        let fast = super::trip(
            &id("101"),
            Duration::from_secs(9 * 60) / 600,
            FIX_EVERY / 600,
        );
        assert_eq!((fast.from, fast.to, fast.fixes), (trip.from, trip.to, 37));
    }

    #[test]
    fn driver_and_route_follow_from_the_order_id_alone() {
        let lasts = Duration::from_secs(540);
        assert_eq!(driver(&id("g-1")), driver(&id("g-1")));
        assert_eq!(
            trip(&id("g-1"), lasts, FIX_EVERY),
            trip(&id("g-1"), lasts, FIX_EVERY)
        );
        assert_ne!(
            trip(&id("g-1"), lasts, FIX_EVERY).to,
            trip(&id("g-2"), lasts, FIX_EVERY).to
        );
        let driver = driver(&id("g-1"));
        assert!(driver.driver_id.starts_with("sim-driver-"), "{driver:?}");
        assert!(driver.phone.starts_with("+1-555-01"));
        // A stage shorter than one interval still reports the drop-off.
        let short = trip(&id("g-1"), Duration::from_secs(1), FIX_EVERY);
        assert_eq!(short.fixes, 2);
        assert_eq!(short.point(1), short.to);
    }
}
