public enum ControlProtocol {}
