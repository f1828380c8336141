//! recorder-kvm
