# attack: async function
# rejected-because: async
async def stage_1(keypoints, trajectory):
    await x
