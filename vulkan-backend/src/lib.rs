//! Vulkan backend for `gpusched`. Work in progress: see the `vulkan-backend` issue.
