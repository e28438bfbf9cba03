//! Faults written as text, for programs that cannot call the control interface: the
//! [`FAULTS_ENV`] environment variable, read when the loader first loads the layer.
//!
//! Rule: a specification is applied whole or not at all; a bad one is reported on standard
//! error when the layer loads, and the layer then passes everything through.

use ash::vk;

use crate::call::{validate, ArmError, Fault, FaultCall, Trigger};

/// The environment variable holding faults to arm when the layer is loaded (grammar:
/// [`parse_spec`]). [`FaultLayer::reset`](crate::FaultLayer::reset) disarms them too.
pub const FAULTS_ENV: &str = "GPUSCHED_FAULT_LAYER_FAULTS";

/// The error codes a specification may name (every code some command allows).
const CODES: &[(&str, vk::Result)] = &[
    ("VK_ERROR_OUT_OF_HOST_MEMORY", vk::Result::ERROR_OUT_OF_HOST_MEMORY),
    ("VK_ERROR_OUT_OF_DEVICE_MEMORY", vk::Result::ERROR_OUT_OF_DEVICE_MEMORY),
    ("VK_ERROR_INITIALIZATION_FAILED", vk::Result::ERROR_INITIALIZATION_FAILED),
    ("VK_ERROR_DEVICE_LOST", vk::Result::ERROR_DEVICE_LOST),
    ("VK_ERROR_MEMORY_MAP_FAILED", vk::Result::ERROR_MEMORY_MAP_FAILED),
    ("VK_ERROR_LAYER_NOT_PRESENT", vk::Result::ERROR_LAYER_NOT_PRESENT),
    ("VK_ERROR_EXTENSION_NOT_PRESENT", vk::Result::ERROR_EXTENSION_NOT_PRESENT),
    ("VK_ERROR_FEATURE_NOT_PRESENT", vk::Result::ERROR_FEATURE_NOT_PRESENT),
    ("VK_ERROR_INCOMPATIBLE_DRIVER", vk::Result::ERROR_INCOMPATIBLE_DRIVER),
    ("VK_ERROR_TOO_MANY_OBJECTS", vk::Result::ERROR_TOO_MANY_OBJECTS),
];

/// One armed command of a specification.
pub type SpecEntry = (FaultCall, Trigger, Fault);

/// A fault specification that does not parse or does not fit its command.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// An entry is not `COMMAND:TRIGGER:FAULT`.
    #[error("fault entry `{0}` is not COMMAND:TRIGGER:FAULT")]
    Malformed(String),
    /// The command is not one the layer intercepts.
    #[error("`{0}` is not a command the fault layer intercepts")]
    UnknownCommand(String),
    /// The trigger is neither `nth=N` nor `random=P@SEED` with numbers.
    #[error("fault trigger `{0}` is neither nth=N nor random=P@SEED")]
    BadTrigger(String),
    /// The fault is neither `lose` nor a known error code name.
    #[error("fault `{0}` is neither `lose` nor a VK_ERROR_* code name")]
    UnknownCode(String),
    /// The entry parses but does not fit its command.
    #[error(transparent)]
    Arm(#[from] ArmError),
}

impl SpecError {
    /// Whether the text itself is malformed (as opposed to a fault the command does not allow).
    pub fn is_syntax(&self) -> bool {
        !matches!(self, Self::Arm(_))
    }
}

/// Parses and validates a fault specification.
///
/// Grammar: entries separated by `;`, each `COMMAND:TRIGGER:FAULT` where
/// - `COMMAND` is the Vulkan name of a [`FaultCall`] (`vkAllocateMemory`);
/// - `TRIGGER` is `nth=N` ([`Trigger::Nth`]) or `random=P@SEED` ([`Trigger::Random`]);
/// - `FAULT` is `lose` ([`Fault::LoseDevice`]) or an error code's name
///   (`VK_ERROR_OUT_OF_DEVICE_MEMORY`, [`Fault::Fail`]).
///
/// For example
/// `vkAllocateMemory:nth=3:VK_ERROR_OUT_OF_DEVICE_MEMORY;vkQueueSubmit:random=0.01@7:lose`.
pub fn parse_spec(spec: &str) -> Result<Vec<SpecEntry>, SpecError> {
    spec.split(';').map(str::trim).filter(|entry| !entry.is_empty()).map(parse_entry).collect()
}

fn parse_entry(entry: &str) -> Result<SpecEntry, SpecError> {
    let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
    let [command, trigger, fault] = parts[..] else {
        return Err(SpecError::Malformed(entry.to_owned()));
    };
    let call = FaultCall::ALL
        .into_iter()
        .find(|call| call.name() == command)
        .ok_or_else(|| SpecError::UnknownCommand(command.to_owned()))?;
    let bad_trigger = || SpecError::BadTrigger(trigger.to_owned());
    let trigger = if let Some(n) = trigger.strip_prefix("nth=") {
        Trigger::Nth(n.parse().map_err(|_| bad_trigger())?)
    } else if let Some(random) = trigger.strip_prefix("random=") {
        let (probability, seed) = random.split_once('@').ok_or_else(bad_trigger)?;
        Trigger::Random {
            probability: probability.parse().map_err(|_| bad_trigger())?,
            seed: seed.parse().map_err(|_| bad_trigger())?,
        }
    } else {
        return Err(bad_trigger());
    };
    let fault = if fault == "lose" {
        Fault::LoseDevice
    } else {
        let code = CODES.iter().find(|(name, _)| *name == fault);
        Fault::Fail(code.ok_or_else(|| SpecError::UnknownCode(fault.to_owned()))?.1)
    };
    validate(call, trigger, fault)?;
    Ok((call, trigger, fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let spec =
            "vkAllocateMemory:nth=3:VK_ERROR_OUT_OF_DEVICE_MEMORY; vkQueueSubmit:random=0.01@7:lose;";
        let oom = Fault::Fail(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        assert_eq!(
            parse_spec(spec),
            Ok(vec![
                (FaultCall::AllocateMemory, Trigger::Nth(3), oom),
                (
                    FaultCall::QueueSubmit,
                    Trigger::Random { probability: 0.01, seed: 7 },
                    Fault::LoseDevice
                ),
            ])
        );
        assert_eq!(parse_spec(""), Ok(vec![]));
    }

    #[test]
    fn rejects_bad_entries() {
        let cases = [
            ("vkAllocateMemory:nth=3", SpecError::Malformed("vkAllocateMemory:nth=3".into())),
            ("vkFoo:nth=1:lose", SpecError::UnknownCommand("vkFoo".into())),
            ("vkQueueSubmit:nth=x:lose", SpecError::BadTrigger("nth=x".into())),
            ("vkQueueSubmit:random=0.5:lose", SpecError::BadTrigger("random=0.5".into())),
            ("vkQueueSubmit:nth=1:VK_SUCCESS", SpecError::UnknownCode("VK_SUCCESS".into())),
            (
                "vkAllocateMemory:nth=1:lose",
                SpecError::Arm(ArmError::CannotLoseDevice(FaultCall::AllocateMemory)),
            ),
            ("vkQueueSubmit:nth=0:lose", SpecError::Arm(ArmError::ZeroIndex)),
        ];
        for (spec, expected) in cases {
            let error = parse_spec(spec).expect_err(spec);
            assert_eq!(error.is_syntax(), !matches!(expected, SpecError::Arm(_)));
            assert_eq!(error, expected, "{spec}");
        }
        // One bad entry rejects the whole specification.
        assert!(parse_spec("vkQueueSubmit:nth=1:lose;vkFoo:nth=1:lose").is_err());
    }

    #[test]
    fn every_allowed_code_has_a_name() {
        for call in FaultCall::ALL {
            for code in call.error_codes() {
                assert!(CODES.iter().any(|(_, c)| c == code), "{call:?} {code:?}");
            }
        }
    }
}
