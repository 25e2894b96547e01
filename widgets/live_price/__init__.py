"""Live-room exclusive prices (直播专享价): the hottest read of a live stream."""
