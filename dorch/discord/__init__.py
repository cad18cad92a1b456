"""Discord: the REST client dorch talks through, and an emulator of Discord's API to test it offline."""
