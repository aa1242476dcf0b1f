fn main() { let _ = tch::Device::Cpu; }
