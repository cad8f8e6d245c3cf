//! Answering commands from the control room: `set_interval`, `set_plan` (traffic lights),
//! `reboot` (simulated) and `ping`. Pure: the agent passes the device state and the time.

use std::time::Duration;

use telemetry::command::{Command, CommandAck};
use telemetry::EventTime;

use crate::config::DeviceSpec;
use crate::drivers::{Driver, SignalPlan};

/// What the agent must do after a command was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Restart the device's driver and announce it online again.
    Reboot,
}

/// Apply `cmd` to `device` at `now`; the answer is always returned, never an error.
pub fn apply_command(
    device: &mut DeviceSpec,
    cmd: &Command,
    now: EventTime,
) -> (CommandAck, Effect) {
    if cmd.is_expired(now) {
        return (CommandAck::rejected(&cmd.id, "expired before it arrived"), Effect::None);
    }
    match cmd.name.as_str() {
        "ping" => (CommandAck::ok(&cmd.id, Some("pong".into())), Effect::None),
        "reboot" => (CommandAck::ok(&cmd.id, Some("rebooting".into())), Effect::Reboot),
        "set_interval" => {
            let interval = match (cmd.args.get("interval"), cmd.args.get("seconds")) {
                (Some(serde_json::Value::String(s)), None) => humantime::parse_duration(s).ok(),
                (None, Some(v)) => {
                    v.as_f64().filter(|s| s.is_finite() && *s > 0.0).map(Duration::from_secs_f64)
                }
                _ => None,
            };
            match interval {
                Some(i) if i >= Duration::from_millis(100) && i <= Duration::from_secs(3600) => {
                    device.interval = i;
                    (
                        CommandAck::ok(
                            &cmd.id,
                            Some(format!("interval {}", humantime::format_duration(i))),
                        ),
                        Effect::None,
                    )
                }
                Some(_) => (
                    CommandAck::rejected(&cmd.id, "interval must be between 100ms and 1h"),
                    Effect::None,
                ),
                None => (
                    CommandAck::rejected(
                        &cmd.id,
                        "args must hold \"interval\" (e.g. \"10s\") or \"seconds\" (a number)",
                    ),
                    Effect::None,
                ),
            }
        }
        "set_plan" => {
            let Driver::TrafficLight { plan, .. } = &mut device.driver else {
                return (
                    CommandAck::rejected(
                        &cmd.id,
                        format!(
                            "set_plan is for traffic lights; this is a {}",
                            device.driver.kind()
                        ),
                    ),
                    Effect::None,
                );
            };
            let phases: Option<Vec<f64>> = cmd
                .args
                .get("phases")
                .and_then(|v| v.as_array())
                .and_then(|a| a.iter().map(serde_json::Value::as_f64).collect());
            match phases
                .ok_or_else(|| "args.phases must be an array of seconds".to_string())
                .and_then(SignalPlan::new)
            {
                Ok(p) => {
                    *plan = p;
                    (
                        CommandAck::ok(&cmd.id, Some(format!("cycle {} s", plan.cycle_s()))),
                        Effect::None,
                    )
                }
                Err(e) => (CommandAck::rejected(&cmd.id, e), Effect::None),
            }
        }
        other => (
            CommandAck::rejected(
                &cmd.id,
                format!("unknown command {:?}", other.chars().take(64).collect::<String>()),
            ),
            Effect::None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use telemetry::command::CommandResult;
    use telemetry::DeviceId;

    use super::*;

    fn light() -> DeviceSpec {
        DeviceSpec {
            id: DeviceId::parse("tl-1").unwrap(),
            interval: Duration::from_secs(5),
            driver: Driver::TrafficLight {
                plan: SignalPlan::new(vec![30.0, 30.0]).unwrap(),
                fault_until: None,
                fault_rate_per_hour: 0.0,
            },
        }
    }

    fn cmd(text: &str) -> Command {
        Command::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn each_command_is_answered() {
        let mut d = light();
        let now = EventTime(10_000);
        let (a, _) = apply_command(&mut d, &cmd(r#"{"id":"1","name":"ping"}"#), now);
        assert_eq!((a.result, a.detail.as_deref()), (CommandResult::Ok, Some("pong")));
        let (a, _) = apply_command(
            &mut d,
            &cmd(r#"{"id":"2","name":"set_interval","args":{"interval":"10s"}}"#),
            now,
        );
        assert_eq!(a.result, CommandResult::Ok);
        assert_eq!(d.interval, Duration::from_secs(10));
        let (a, _) = apply_command(
            &mut d,
            &cmd(r#"{"id":"3","name":"set_interval","args":{"seconds":0.01}}"#),
            now,
        );
        assert_eq!(a.result, CommandResult::Rejected);
        assert_eq!(d.interval, Duration::from_secs(10));
        let (a, _) = apply_command(
            &mut d,
            &cmd(r#"{"id":"4","name":"set_plan","args":{"phases":[50,5,30,5]}}"#),
            now,
        );
        assert_eq!(a.result, CommandResult::Ok);
        let Driver::TrafficLight { plan, .. } = &d.driver else { unreachable!() };
        assert_eq!(plan.cycle_s(), 90.0);
        let (a, e) = apply_command(&mut d, &cmd(r#"{"id":"5","name":"reboot"}"#), now);
        assert_eq!((a.result, e), (CommandResult::Ok, Effect::Reboot));
    }

    #[test]
    fn expired_unknown_and_misdirected_commands_are_rejected_with_reasons() {
        let mut d = light();
        let (a, _) = apply_command(
            &mut d,
            &cmd(r#"{"id":"1","name":"ping","expires_at":5000}"#),
            EventTime(10_000),
        );
        assert_eq!(a.detail.as_deref(), Some("expired before it arrived"));
        let (a, _) =
            apply_command(&mut d, &cmd(r#"{"id":"2","name":"self_destruct"}"#), EventTime(0));
        assert_eq!(a.detail.as_deref(), Some("unknown command \"self_destruct\""));
        let mut park = DeviceSpec { driver: Driver::Parking { capacity: 10 }, ..light() };
        let (a, _) = apply_command(
            &mut park,
            &cmd(r#"{"id":"3","name":"set_plan","args":{"phases":[1]}}"#),
            EventTime(0),
        );
        assert_eq!(a.result, CommandResult::Rejected);
        assert!(a.detail.unwrap().contains("parking"));
        let (a, _) = apply_command(
            &mut d,
            &cmd(r#"{"id":"4","name":"set_plan","args":{"phases":"fast"}}"#),
            EventTime(0),
        );
        assert_eq!(a.result, CommandResult::Rejected);
    }
}
