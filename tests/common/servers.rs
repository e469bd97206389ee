//! Real servers for tests, started on free loopback ports (filled in by the
//! Redis and memcached backends' tests).
